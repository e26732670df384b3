"""Hydra's configs and presets, installed as the package nst_tf.conf (Hydra needs this file)."""
