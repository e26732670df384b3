"""`python -m nst_tf`: the nst-tf command, the same as `python scripts/run.py`."""

from nst_tf.app import main

if __name__ == "__main__":
    main()
