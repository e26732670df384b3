"""Run one style transfer, or a sweep with -m: `python scripts/run.py style=starry alpha=1e-3`."""

from nst_tf.app import main

if __name__ == "__main__":
    main()
