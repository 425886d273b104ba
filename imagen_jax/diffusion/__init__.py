"""Diffusion math shared by every stage of imagen_jax and unclip_jax."""

from imagen_jax.diffusion.guidance import (
    check_guidance, classifier_free_guidance, drop_condition, guided_prediction, negative_condition,
    null_condition)
from imagen_jax.diffusion.losses import diffusion_loss, min_snr_weight
from imagen_jax.diffusion.parameterization import (
    PREDICTIONS, eps_from_x0, from_x0_eps, q_sample, target, to_x0_eps)
from imagen_jax.diffusion.samplers import (
    Inpaint, SamplerSettings, check_steps, check_strength, ddim_invert, sample)
from imagen_jax.diffusion.solvers import (
    SAMPLERS, StepOutput, ddim_step, ddpm_step, dpmpp_2m_step, step, t_to_timestep,
    timestep_to_t)
from imagen_jax.diffusion.schedules import (
    SCHEDULE_NAMES, CosineSchedule, DiscreteSchedule, LinearSchedule, alpha_sigma,
    discrete_betas, get_schedule, shifted_cosine)
from imagen_jax.diffusion.thresholding import (
    THRESHOLDS, apply_threshold, dynamic_threshold, dynamic_threshold_scale,
    static_threshold)
