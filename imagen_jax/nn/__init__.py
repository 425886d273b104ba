"""Neural-network building blocks (Flax linen)."""
