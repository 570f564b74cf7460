"""Hadamard matrices for sizes like 576 = 36 x 16 and 1536 = 12 x 128, and an exact fast transform.

Constructions: Sylvester (2^k), Paley I (q + 1 for a prime q = 3 mod 4: 12, 20, 44, 60, ...), Paley II
(2(q + 1) for a prime q = 1 mod 4: 28, 36, 60, ...), and Kronecker products ``H_m (x) H_{2^k}``.
The transform applies ``x -> x H^T / sqrt(n)`` as a fast Walsh-Hadamard on the 2^k factor plus a small
``m x m`` matmul, or the ``fast_hadamard_transform`` CUDA kernel for the 2^k factor when it imports.
"""

from __future__ import annotations

import functools
import math

import torch


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % p for p in range(2, int(q**0.5) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    squares = {(i * i) % q for i in range(1, q)}
    chi = lambda a: 0 if a % q == 0 else (1 if a % q in squares else -1)  # noqa: E731
    return torch.tensor([[chi(j - i) for j in range(q)] for i in range(q)], dtype=torch.float64)


def _paley1(q: int) -> torch.Tensor:
    jac = _jacobsthal(q)
    n = q + 1
    s = torch.zeros(n, n, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jac
    return s + torch.eye(n, dtype=torch.float64)


def _paley2(q: int) -> torch.Tensor:
    jac = _jacobsthal(q)
    n = q + 1
    s = torch.zeros(n, n, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = 1
    s[1:, 1:] = jac
    block_zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    block_one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    out = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = block_zero if s[i, j] == 0 else s[i, j] * block_one
    return out


@functools.lru_cache(maxsize=None)
def small_hadamard(m: int) -> torch.Tensor | None:
    """An (unnormalized) Hadamard matrix of order m from a Paley construction, or None."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    if m == 2:
        return torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return _paley1(m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return _paley2(m // 2 - 1)
    return None


#: larger Paley factors would make the online transform a dense matmul; such sizes are not supported
MAX_SMALL_ORDER = 256


@functools.lru_cache(maxsize=None)
def factorize(n: int) -> tuple[int, int] | None:
    """n = m * 2^k with a Paley order m (the smallest such m), or None when no construction is known."""
    if n < 1:
        return None
    power = n & -n
    m = n // power
    while power >= 1 and m <= MAX_SMALL_ORDER:
        if small_hadamard(m) is not None:
            return m, power
        power //= 2
        m *= 2
    return None


def has_hadamard(n: int) -> bool:
    return factorize(n) is not None


def hadamard_matrix(n: int, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal H_m (x) H_{2^k} / sqrt(n)."""
    fac = factorize(n)
    if fac is None:
        raise ValueError(f"no Hadamard construction for size {n}")
    m, p = fac
    sylvester = torch.ones(1, 1, dtype=torch.float64)
    while sylvester.shape[0] < p:
        sylvester = torch.cat([torch.cat([sylvester, sylvester], 1), torch.cat([sylvester, -sylvester], 1)], 0)
    return (torch.kron(small_hadamard(m), sylvester) / math.sqrt(n)).to(dtype)


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized Walsh-Hadamard (Sylvester order) along the last dim (a power of two)."""
    n = x.shape[-1]
    shape = x.shape
    h = 1
    x = x.reshape(-1, n)
    while h < n:
        x = x.view(-1, n // (2 * h), 2, h)
        a, b = x[:, :, 0, :], x[:, :, 1, :]
        x = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return x.reshape(shape)


def _cuda_kernel():
    try:
        from fast_hadamard_transform import hadamard_transform
    except ImportError:
        return None
    return hadamard_transform


def fast_hadamard(x: torch.Tensor) -> torch.Tensor:
    """x H^T along the last dim, H = H_m (x) H_{2^k} / sqrt(n); exact (no approximation)."""
    n = x.shape[-1]
    fac = factorize(n)
    if fac is None:
        raise ValueError(f"no Hadamard construction for size {n}")
    m, p = fac
    y = x.reshape(*x.shape[:-1], m, p)
    kernel = _cuda_kernel() if x.is_cuda else None
    y = kernel(y.contiguous(), 1.0) if kernel is not None else _fwht(y)
    if m > 1:
        hm = small_hadamard(m).to(x.dtype).to(x.device)
        y = torch.matmul(hm, y)
    return (y / math.sqrt(n)).reshape(x.shape)
