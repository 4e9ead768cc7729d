"""Multi-resolution STFT loss for training the parallel decoder.

The value is the one of ``auraloss.freq.MultiResolutionSTFTLoss(w_sc=0, w_log_mag=1, w_lin_mag=1)``
with hop a quarter and a Hann window of each FFT size (the evaluation's spectral distance, which
keeps using auraloss, is that same definition; a test holds the two equal). It is written here
because auraloss also computes the phase of both spectrograms (``torch.angle``) whatever the
weights, about 13% of a training step of the default model on a CPU, and tracks the target's
spectrogram as if it could need a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of L1(log magnitude) + L1(linear magnitude).

    Args:
        fft_sizes: FFT sizes; each resolution hops a quarter of its size with a periodic Hann
            window of the full size, centred frames with reflection padding (``torch.stft``'s default).
        eps: floor of the power spectrum before the square root (auraloss's default).
    """

    def __init__(self, fft_sizes: tuple[int, ...], eps: float = 1e-8) -> None:
        super().__init__()
        self.fft_sizes = tuple(fft_sizes)
        self.eps = eps
        for size in self.fft_sizes:
            self.register_buffer(f"window_{size}", torch.hann_window(size), persistent=False)

    def _magnitude(self, audio: Tensor, size: int) -> Tensor:
        """``[batch, samples]`` -> ``[batch, size // 2 + 1, frames]`` magnitudes."""
        window = getattr(self, f"window_{size}")
        spectrum = torch.stft(audio, size, size // 4, size, window.to(audio.dtype), return_complex=True)
        return torch.sqrt(torch.clamp(spectrum.real**2 + spectrum.imag**2, min=self.eps))

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Loss of ``prediction`` against ``target``, both ``[batch, samples]``.

        Returns:
            The scalar loss, and the per-resolution log- and linear-magnitude terms (scalars).
        """
        log_terms, linear_terms = [], []
        for size in self.fft_sizes:
            predicted = self._magnitude(prediction, size)
            with torch.no_grad():
                reference = self._magnitude(target, size)
            log_terms.append(torch.nn.functional.l1_loss(predicted.log(), reference.log()))
            linear_terms.append(torch.nn.functional.l1_loss(predicted, reference))
        loss = torch.stack([log + linear for log, linear in zip(log_terms, linear_terms)]).mean()
        return loss, log_terms, linear_terms
