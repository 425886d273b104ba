"""Closed-form optimal denoisers, the independent reference for sampler tests.

For data x0 ~ sum_k w_k N(mu_k, s_k^2) (independently per element) and
z = alpha x0 + sigma eps, with var_k = alpha^2 s_k^2 + sigma^2 and responsibilities
r_k(z) proportional to w_k N(z; alpha mu_k, var_k), the MMSE estimates are
    E[x0 | z]  = sum_k r_k (mu_k + alpha s_k^2 (z - alpha mu_k) / var_k)
    E[eps | z] = sum_k r_k sigma (z - alpha mu_k) / var_k.
A sampler driven by them must reproduce the data distribution. Both are written
without dividing by alpha or sigma, so they stay exact at the schedule's ends.
"""

import jax
import jax.numpy as jnp


def _alpha_sigma(logsnr):
    # Written out here (not imported) so the reference shares no code with the library.
    return jnp.sqrt(1.0 / (1.0 + jnp.exp(-logsnr))), jnp.sqrt(1.0 / (1.0 + jnp.exp(logsnr)))


def mixture_denoiser(weights, means, stds, prediction="eps"):
    """Denoiser(z, logsnr) -> MMSE prediction of kind 'eps', 'x0' or 'v'.

    `weights` has shape [K]; `means` and `stds` broadcast against z.shape + (K,):
    shape [K] for one mixture shared by every element, [D, 1] for a diagonal
    Gaussian over the last axis.
    """
    weights, means, stds = (jnp.asarray(a, jnp.float32) for a in (weights, means, stds))

    def denoise(z, logsnr):
        alpha, sigma = _alpha_sigma(logsnr.reshape((-1,) + (1,) * z.ndim))
        zk = z[..., None]
        var = alpha**2 * stds**2 + sigma**2
        log_lik = jnp.log(weights) - 0.5 * jnp.log(var) - 0.5 * (zk - alpha * means) ** 2 / var
        resp = jax.nn.softmax(log_lik, axis=-1)
        x0 = jnp.sum(resp * (means + alpha * stds**2 * (zk - alpha * means) / var), axis=-1)
        eps = jnp.sum(resp * sigma * (zk - alpha * means) / var, axis=-1)
        a, s = alpha[..., 0], sigma[..., 0]
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]

    return denoise


def gaussian_denoiser(mean, std, prediction="eps"):
    """Denoiser for x0 ~ N(mean, diag(std^2)) over the last axis."""
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return mixture_denoiser([1.0], mean[:, None], std[:, None], prediction)
