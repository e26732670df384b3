"""nst-tf: Gatys, Ecker & Bethge neural style transfer in TensorFlow/Keras.

Importing the package loads no TensorFlow; a run does (see nst_tf._tensorflow).
"""
