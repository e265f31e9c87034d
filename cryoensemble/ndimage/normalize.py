"""Image normalization: background subtraction, rescaling, standardization."""

import jax.numpy as jnp
from jaxtyping import Array, Float


def compute_edge_value(image: Float[Array, "ny nx"]) -> Float[Array, ""]:
    """The mean of the outermost rows and columns of an image."""
    image = jnp.asarray(image)
    edges = jnp.concatenate([image[0, :], image[-1, :], image[1:-1, 0], image[1:-1, -1]])
    return jnp.mean(edges)


def background_subtract_image(image: Float[Array, "ny nx"]) -> Float[Array, "ny nx"]:
    """Subtract the mean of the image's edge pixels (its background level)."""
    image = jnp.asarray(image)
    return image - compute_edge_value(image)


def rescale_image(image: Float[Array, "ny nx"], mean=0.0, std=1.0) -> Float[Array, "ny nx"]:
    """Shift and scale an image to the given mean and standard deviation."""
    image = jnp.asarray(image)
    return std * (image - jnp.mean(image)) / jnp.std(image) + mean


def standardize_image(image: Float[Array, "ny nx"]) -> Float[Array, "ny nx"]:
    """Zero mean and unit standard deviation."""
    return rescale_image(image, 0.0, 1.0)
