"""Writes an image folder to try ``image_folder.yaml`` and ``mobilenet_teacher.yaml`` on.

    python examples/make_image_folder.py [--per-class 300] [--out examples/data/clothes]

Takes Fashion-MNIST images (from /usr/share/datasets/fashion-mnist or the
Keras cache: nothing is downloaded unless ``--download``) of five classes and
writes them as PNG files in the layout ``keras.utils.image_dataset_from_directory``
reads: ``<out>/train/<class>/*.png`` and ``<out>/test/<class>/*.png``. Your
own photos go in the same layout.
"""

import argparse
import os
import sys

import numpy as np

CLASSES = {0: "t_shirt", 1: "trouser", 5: "sandal", 7: "sneaker", 9: "ankle_boot"}


def write_folder(out, per_class=300, test_per_class=None, allow_download=False):
    """Writes the folder; returns the number of images written."""
    from PIL import Image

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from keras_distill import datasets

    (x, y), (xt, yt) = datasets.load_fashion_mnist(allow_download=allow_download)
    test_per_class = test_per_class or max(1, per_class // 5)
    written = 0
    for split, images, labels, n in (("train", x, y, per_class),
                                     ("test", xt, yt, test_per_class)):
        for label, name in CLASSES.items():
            folder = os.path.join(out, split, name)
            os.makedirs(folder, exist_ok=True)
            for i, index in enumerate(np.flatnonzero(labels == label)[:n]):
                Image.fromarray(images[index]).save(os.path.join(folder, f"{i:05d}.png"))
                written += 1
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "data", "clothes"))
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args()
    n = write_folder(args.out, args.per_class, allow_download=args.download)
    print(f"wrote {n} PNG images to {args.out}/train and {args.out}/test")
