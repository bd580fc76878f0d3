"""Alternating back-propagation on sound: a 1-D generator of 1024-sample
waveform clips (64 ms at 16 kHz) learned from WAV files, writing generated
WAVs (PAPERS §4).

    python experiments/abp_sound.py --data /usr/share/sounds/sound-icons --out runs/abp-sound

(Debian's ``sound-icons`` package installs those WAVs.) The report compares
the mean log power spectrum of generated clips with the training clips', and
white noise of the same power for scale.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from gcnjax import abp
from gcnjax import data as gdata
from gcnjax import generator as G
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunConfig


def log_power(clips):
    """Mean log power spectrum of (N, T, 1) clips."""
    spectrum = np.abs(np.fft.rfft(clips[..., 0] * np.hanning(clips.shape[1]), axis=1)) ** 2
    return np.log10(spectrum.mean(axis=0) + 1e-10)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a WAV file or a folder of WAVs")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--clips", type=int, default=200, help="at most this many clips")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--latent-dim", type=int, default=20)
    args = p.parse_args()

    clips, rate = gdata.load_sound_clips(args.data, 1024, hop=512)
    # Drop near-silent clips: they teach the net nothing.
    loud = clips[np.sqrt(np.mean(clips**2, axis=(1, 2))) > 0.02]
    clips = loud[np.random.default_rng(0).permutation(len(loud))[:args.clips]]
    config = G.GeneratorConfig(net="sound", latent_dim=args.latent_dim, sigma=0.1,
                               langevin=LangevinConfig.from_delta(0.1, 10), learning_rate=1e-3, batch_size=50,
                               n_epochs=args.epochs, run=RunConfig(log_every=10, checkpoint_every=200))
    r = abp.learn_generator(config, clips, args.out, title="ABP on sound clips", source=args.data,
                            sample_rate=rate, overwrite=True)
    config_, scale, net, params, _ = abp.load_generator_run(args.out)
    generated = np.asarray(net.apply(params, jax.random.normal(jax.random.key(5), (200, config.latent_dim))))
    noise = np.random.default_rng(1).normal(size=generated.shape) * np.sqrt(np.mean(clips**2))
    target = log_power(clips)
    summary = {
        "clips": int(clips.shape[0]), "rate": rate, "seconds": r["seconds"], "train_mse": r["train_mse"],
        "log_spectrum_distance_generated": float(np.mean(np.abs(log_power(generated) - target))),
        "log_spectrum_distance_white_noise": float(np.mean(np.abs(log_power(noise) - target))),
        "rms_data": float(np.sqrt(np.mean(clips**2))), "rms_generated": float(np.sqrt(np.mean(generated**2))),
    }
    # One longer listening file: 16 generated clips back to back, and 16 training clips.
    gdata.save_wav(args.out / "sounds" / "generated_16_clips.wav", generated[:16].reshape(-1), rate)
    gdata.save_wav(args.out / "sounds" / "observed_16_clips.wav", clips[:16].reshape(-1), rate)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
