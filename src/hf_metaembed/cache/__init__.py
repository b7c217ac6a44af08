"""Frozen backbone-feature cache: states of the backbone-reading stage, computed once and read back each epoch."""

from .build import *  # noqa: F403
