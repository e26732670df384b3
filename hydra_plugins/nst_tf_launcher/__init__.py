"""nst-tf's Hydra launcher plugin: `hydra/launcher=nst_batched` (conf/hydra/launcher/)."""
