"""nst-tf: Gatys, Ecker & Bethge neural style transfer in TensorFlow/Keras."""
