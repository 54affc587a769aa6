"""Voice anonymisation by McAdams-coefficient shifting of LPC poles.

This is the method of the signal-processing baseline of the VoicePrivacy
Challenge 2020. Each short frame is modelled by linear prediction (LPC), and
the angle ``phi`` of every complex pole of the LPC filter moves to
``phi ** alpha``. The frame is then resynthesised from the LPC residual
through the changed filter. Formants move, so the speaker's timbre changes,
while the excitation (and so the words and their timing) stays. Frames
overlap by half a window and are added back with a Hann window.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

from enclave.errors import ValidationError

__all__ = ["lpc", "mcadams"]


def lpc(frame: np.ndarray, order: int) -> np.ndarray:
    """Return LPC coefficients ``[1, a1, ..., a_order]`` of ``frame``.

    The coefficients come from the autocorrelation method.
    """
    correlation = np.correlate(frame, frame, mode="full")[
        len(frame) - 1 : len(frame) + order
    ]
    if correlation[0] <= 0:
        return np.concatenate([[1.0], np.zeros(order)])
    # A tiny white-noise floor keeps the Toeplitz system well conditioned on
    # near-silent or purely periodic frames.
    correlation = correlation.astype(np.float64)
    correlation[0] *= 1.0 + 1e-9
    coefficients = solve_toeplitz(correlation[:order], -correlation[1 : order + 1])
    return np.concatenate([[1.0], coefficients])


def _shift_poles(coefficients: np.ndarray, alpha: float) -> np.ndarray:
    poles = np.roots(coefficients)
    complex_poles = np.abs(poles.imag) > 1e-12
    angles = np.angle(poles)
    # Angles lie in (-pi, pi]; the power acts on their size and keeps their sign,
    # so conjugate pairs stay conjugate and the filter stays real.
    shifted = np.sign(angles) * np.abs(angles) ** alpha
    new_angles = np.where(complex_poles, shifted, angles)
    new_poles = np.abs(poles) * np.exp(1j * new_angles)
    return np.real(np.poly(new_poles))


def mcadams(
    signal: np.ndarray,
    sample_rate: int,
    *,
    alpha: float = 0.8,
    frame_ms: float = 20.0,
    order: int = 20,
) -> np.ndarray:
    """Anonymise the voice in a mono signal with the McAdams coefficient ``alpha``.

    Parameters
    ----------
    signal
        Mono samples, float, any scale.
    sample_rate
        Samples per second.
    alpha
        McAdams coefficient; 1 leaves the voice unchanged, the challenge
        baseline uses 0.8. Values from 0.5 to 0.95 are accepted.
    frame_ms
        Analysis window length in milliseconds; frames overlap by half.
    order
        LPC order (number of poles).

    Returns
    -------
    numpy.ndarray
        The anonymised signal, float32, as long as ``signal``.
    """
    if not 0.5 <= alpha <= 0.95:
        raise ValidationError(
            f"McAdams coefficient {alpha!r} is invalid; use a value from 0.5 to 0.95"
        )
    if order < 2:
        raise ValidationError(f"LPC order {order!r} is invalid; use 2 or more")
    samples = np.asarray(signal, dtype=np.float64).reshape(-1)
    length = max(2 * order, int(round(sample_rate * frame_ms / 1000)))
    length += length % 2
    hop = length // 2
    window = np.hanning(length + 1)[
        :length
    ]  # periodic Hann: overlapped copies sum to 1

    padded = np.concatenate([np.zeros(hop), samples, np.zeros(length)])
    output = np.zeros_like(padded)
    for start in range(0, len(padded) - length + 1, hop):
        frame = padded[start : start + length] * window
        if not np.any(frame):
            continue
        coefficients = lpc(frame, order)
        residual = lfilter(coefficients, [1.0], frame)
        shifted = _shift_poles(coefficients, alpha)
        # Shifting angles keeps every pole's radius, so the filter stays stable.
        output[start : start + length] += lfilter([1.0], shifted, residual)

    result = output[hop : hop + len(samples)]
    peak = np.abs(result).max() if result.size else 0.0
    source_peak = np.abs(samples).max() if samples.size else 0.0
    if peak > 0 and source_peak > 0:
        result *= source_peak / peak
    return result.astype(np.float32)
