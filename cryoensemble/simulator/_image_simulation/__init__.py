"""Particle images straight from atoms: exact projections of gaussian mixtures, posed,
transferred by a CTF, with white noise at a stated SNR."""

from ._particle_images import (
    GaussianMixtureImageModel as GaussianMixtureImageModel,
    add_white_noise as add_white_noise,
    phase_contrast_image as phase_contrast_image,
    project_gaussian_mixture as project_gaussian_mixture,
    projection_window as projection_window,
)
