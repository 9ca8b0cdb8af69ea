"""A decode-only stand-in for imagecodecs' JPEG numcodecs codec, for a device machine only.

imagecodecs' wheel (28 MB) does not fit beside a store in what a lent GPU machine accepts
(64 MiB a call), and that machine reaches no package registry. Its Pillow decodes the
store's JPEG chunks instead: both link libjpeg-turbo, and on 3,000 frames of the arm store
the two decodes were identical, bit for bit. `tools/bench/gpu_sweep.sh` puts this folder on
PYTHONPATH only when `import imagecodecs` fails; nothing else uses it.
"""
