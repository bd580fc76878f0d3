"""Sanity check of the Fréchet classifier distance (FCD) on Fashion-MNIST.

The FCD is the Fréchet distance between Gaussians fitted to the penultimate
features of gcnjax's small Fashion-MNIST classifier (train and cache it first
with ``gcnjax classifier``). A useful sample-quality metric must be near 0
for two samples of one distribution, grow with a degradation, and be large
for images that are not clothes. This measures it (and the KID-style
polynomial-kernel MMD² of the same features, "KCD") between 5,000 training
images and: 5,000 other training images, 5,000 test images, the same
training images blurred or with noise added, a sample of only half of the
classes (mode dropping), and uniform noise.

    python experiments/fcd_sanity.py --data /usr/share/datasets/fashion-mnist --out runs/fcd-sanity
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gcnjax import classifier, data, metrics
from gcnjax.train import RunDir, write_atomic


def blur(images, sigma):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(images, sigma=(0, sigma, sigma, 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data.FASHION_MNIST_DIR, help="folder of the idx files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=5000, help="images per set")
    parser.add_argument("--weights", type=Path, help="classifier weights (default: the cached ones)")
    args = parser.parse_args()

    run = RunDir(args.out, overwrite=True)
    rng = np.random.default_rng(0)
    n = args.n
    train, train_labels = data.load_fashion_mnist(args.data, "train", limit=3 * n)
    test, _ = data.load_fashion_mnist(args.data, "test", limit=n)
    reference, other = train[:n], train[n:2 * n]
    half_classes = train[n:][train_labels[n:] < 5][:n]
    sets = {
        "other training images": other,
        "test images": test,
        "noise sd 10 added": np.clip(reference + rng.normal(0, 10, reference.shape), 0, 255),
        "noise sd 25 added": np.clip(reference + rng.normal(0, 25, reference.shape), 0, 255),
        "noise sd 50 added": np.clip(reference + rng.normal(0, 50, reference.shape), 0, 255),
        "blurred (sigma 1 px)": blur(reference, 1.0),
        "blurred (sigma 2 px)": blur(reference, 2.0),
        "only classes 0-4": half_classes,
        "uniform noise": rng.uniform(0, 255, reference.shape).astype(np.float32),
    }
    _, _, info = classifier.load_classifier(args.weights)
    extractor = metrics.classifier_features(args.weights)
    t0 = time.perf_counter()
    ref_features = metrics.extract_features(reference, extractor)
    rows = []
    for name, images in sets.items():
        features = metrics.extract_features(images, extractor)
        fcd = metrics.frechet_distance_from_features(ref_features, features)
        kcd, kcd_std = metrics.kernel_distance(ref_features, features, n_subsets=50, subset_size=1000)
        rows.append({"compared with": name, "n": int(images.shape[0]), "fcd": fcd, "kcd": kcd, "kcd_std": kcd_std})
        print(f"{name:24s} FCD {fcd:10.3f}   KCD {kcd:9.4f} ± {kcd_std:.4f}")
    seconds = time.perf_counter() - t0
    run.save_config({"n": n, "data": str(args.data), "weights": str(args.weights or classifier.default_weights_path())},
                    classifier=info)
    write_atomic(run.path / "summary.json", json.dumps({"rows": rows, "seconds": seconds}, indent=2))
    examples = np.concatenate([reference[:8]] + [images[:8] for images in sets.values()])
    data.save_image_grid(run.path / "sets.png", examples, n_cols=8)
    table = "\n".join(f"| {r['compared with']} | {r['n']} | {r['fcd']:.3f} | {r['kcd']:.4f} ± {r['kcd_std']:.4f} |"
                      for r in rows)
    run.write_report(
        "# FCD sanity check\n\n"
        f"Reference: the first {n} Fashion-MNIST training images. Classifier test accuracy "
        f"{info.get('test_accuracy', float('nan')):.4f}.\n\n"
        "| compared with | n | FCD | KCD (mean ± sd over 50 subsets of 1000) |\n|---|---|---|---|\n"
        f"{table}\n\nRows of sets.png: the reference, then each set in the table's order.\n\n![](sets.png)\n"
    )
    print(f"{seconds:.0f} s; report: {run.path / 'report.md'}")


if __name__ == "__main__":
    main()
