"""Exact orthogonal transforms for the down_proj input (docs/DESIGN.md, "Outliers").

An online transform of size n is ``T = A_m (x) H_p`` with p a power of two (a fast Walsh-Hadamard) and
A_m an orthonormal m x m matrix, applied as ``x -> x T^T`` for log2(p) + m operations per element:

- a **Hadamard** A_m (scaled by 1/sqrt(m)) where a construction is known for some split n = m * 2^a:
  Sylvester, Paley I (order q + 1, q a prime power = 3 mod 4), Paley II (order 2(q + 1), q a prime
  power = 1 mod 4), doublings and Kronecker products of those. Prime powers need arithmetic in GF(p^k):
  343 = 7^3 gives order 344 and LLaMA-2-7B's 11008 = 344 x 32; q = 461 gives 924 and 29568 = 924 x 32.
- else a **seeded random orthogonal** A_m for the odd part m of n (the fallback): still exact, the
  same cost class, re-derived from the checkpoint's seed.

The smallest constructible m is taken, so the dense part stays as small as the size allows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

#: the largest dense factor an online transform may carry (its cost is m operations per element)
MAX_SMALL_ORDER = 1024

KINDS = ("hadamard", "random-kronecker")


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % p for p in range(2, int(q**0.5) + 1))


def prime_power(q: int) -> tuple[int, int] | None:
    """(p, k) with q = p^k for a prime p, or None."""
    if q < 2:
        return None
    p = next(d for d in range(2, q + 1) if q % d == 0)
    k, rest = 0, q
    while rest % p == 0:
        rest //= p
        k += 1
    return (p, k) if rest == 1 and _is_prime(p) else None


def _poly_mulmod(a: list[int], b: list[int], modulus: list[int], p: int) -> list[int]:
    """(a * b) mod ``modulus`` over GF(p); polynomials as coefficient lists, lowest degree first;
    ``modulus`` monic of degree k."""
    k = len(modulus) - 1
    prod = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                prod[i + j] = (prod[i + j] + x * y) % p
    for deg in range(len(prod) - 1, k - 1, -1):      # reduce by the monic modulus
        c = prod[deg]
        if c:
            for i in range(k + 1):
                prod[deg - k + i] = (prod[deg - k + i] - c * modulus[i]) % p
    return (prod[:k] + [0] * k)[:k]


def _irreducible(p: int, k: int) -> list[int]:
    """The first monic irreducible polynomial of degree k over GF(p) (trial division)."""
    def polys(deg: int):
        for code in range(p**deg):
            yield [(code // p**i) % p for i in range(deg)] + [1]

    def divides(d: list[int], f: list[int]) -> bool:
        rem = list(f)
        for deg in range(len(rem) - 1, len(d) - 2, -1):
            c = rem[deg]
            if c:
                for i in range(len(d)):
                    rem[deg - len(d) + 1 + i] = (rem[deg - len(d) + 1 + i] - c * d[i]) % p
        return not any(rem[: len(d) - 1])

    for f in polys(k):
        if all(not divides(d, f) for deg in range(1, k // 2 + 1) for d in polys(deg)):
            return f
    raise ValueError(f"no irreducible polynomial of degree {k} over GF({p})")


@functools.lru_cache(maxsize=None)
def jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = chi(a_j - a_i) over GF(q), chi the quadratic character (0 at 0, 1 on squares, else -1);
    field elements are numbered by their base-p digits (polynomial coefficients)."""
    pk = prime_power(q)
    if pk is None:
        raise ValueError(f"{q} is not a prime power")
    p, k = pk
    digits = torch.tensor([[(a // p**i) % p for i in range(k)] for a in range(q)], dtype=torch.long)
    weights = p ** torch.arange(k)
    modulus = _irreducible(p, k) if k > 1 else [0, 1]
    squares = {sum(c * p**i for i, c in enumerate(_poly_mulmod(row, row, modulus, p)))
               for row in digits[1:].tolist()}
    chi = torch.full((q,), -1.0, dtype=torch.float64)
    chi[0] = 0.0
    chi[sorted(squares)] = 1.0
    diff = ((digits[None, :, :] - digits[:, None, :]) % p) @ weights
    return chi[diff]


def _conference(q: int, symmetric: bool) -> torch.Tensor:
    """The order-(q + 1) Paley core: zero diagonal, Jacobsthal block, a border of ones (antisymmetric
    border for q = 3 mod 4)."""
    n = q + 1
    c = torch.zeros(n, n, dtype=torch.float64)
    c[0, 1:] = 1
    c[1:, 0] = 1 if symmetric else -1
    c[1:, 1:] = jacobsthal(q)
    return c


def _paley1(q: int) -> torch.Tensor:
    return _conference(q, symmetric=False) + torch.eye(q + 1, dtype=torch.float64)


def _paley2(q: int) -> torch.Tensor:
    c = _conference(q, symmetric=True)
    one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, one) + torch.kron(torch.eye(q + 1, dtype=torch.float64), zero)


def _sylvester(p: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < p:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@functools.lru_cache(maxsize=None)
def _construction(m: int, extended: bool = True) -> tuple | None:
    """How to build a Hadamard matrix of order m: ("sylvester",) | ("paley1", q) | ("paley2", q) |
    ("kron", a, b); None when no construction is known. Paley over prime fields comes first and
    ``extended=False`` allows nothing else: the rules of spiking-lm's first releases, so a size they
    covered keeps exactly the same matrix (its checkpoints were fitted behind it)."""
    if m in (1, 2):
        return ("sylvester",)
    if m % 4:
        return None
    for field in (_is_prime, prime_power) if extended else (_is_prime,):
        if field(m - 1) and (m - 1) % 4 == 3:
            return ("paley1", m - 1)
        if field(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
            return ("paley2", m // 2 - 1)
    if extended:
        for a in range(4, int(m**0.5) + 1):          # Kronecker products of two non-trivial orders
            if m % a == 0 and _construction(a) and _construction(m // a):
                return ("kron", a, m // a)
    return None


def _chosen(m: int) -> tuple | None:
    """The construction used for order m: the first releases' rule where it has one, else the extended."""
    return _construction(m, extended=False) or _construction(m)


def describe_construction(m: int) -> str:
    how = _chosen(m)
    if how is None:
        return "none"
    if how[0] == "sylvester":
        return f"Sylvester {m}"
    if how[0] in ("paley1", "paley2"):
        q = how[1]
        pk = prime_power(q)
        field = f"GF({pk[0]}^{pk[1]})" if pk and pk[1] > 1 else f"GF({q})"
        return f"Paley {'I' if how[0] == 'paley1' else 'II'} over {field}"
    return f"{describe_construction(how[1])} (x) {describe_construction(how[2])}"


@functools.lru_cache(maxsize=None)
def small_hadamard(m: int) -> torch.Tensor | None:
    """An unnormalized Hadamard matrix of order m (entries +-1, H H^T = m I), or None."""
    how = _chosen(m)
    if how is None:
        return None
    if how[0] == "sylvester":
        return _sylvester(m)
    if how[0] == "paley1":
        return _paley1(how[1])
    if how[0] == "paley2":
        return _paley2(how[1])
    return torch.kron(small_hadamard(how[1]), small_hadamard(how[2]))


def _split(n: int, extended: bool) -> tuple[int, int] | None:
    power = n & -n
    m = n // power
    while power >= 1 and m <= MAX_SMALL_ORDER:
        if _construction(m, extended) is not None:
            return m, power
        power //= 2
        m *= 2
    return None


@functools.lru_cache(maxsize=None)
def factorize(n: int) -> tuple[int, int] | None:
    """n = m * 2^a with the smallest constructible Hadamard order m <= MAX_SMALL_ORDER, as (m, 2^a):
    first by the prime-field rules alone (the first releases' choice, kept for their checkpoints), then
    with prime-power fields and Kronecker products."""
    if n < 1:
        return None
    return _split(n, extended=False) or _split(n, extended=True)


def has_hadamard(n: int) -> bool:
    return factorize(n) is not None


def hadamard_matrix(n: int, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal H_m (x) H_{2^a} / sqrt(n)."""
    fac = factorize(n)
    if fac is None:
        raise ValueError(f"no Hadamard construction for size {n}")
    m, p = fac
    return (torch.kron(small_hadamard(m), _sylvester(p)) / math.sqrt(n)).to(dtype)


#: the Walsh-Hadamard runs as a product of Sylvester blocks of at most this order, one small matmul per
#: block axis: the same sums as the log2(p) butterfly stages, but a few dense passes instead of one copy
#: per stage (three times faster on CPU for p = 128)
WALSH_BLOCK_BITS = 4


@functools.lru_cache(maxsize=None)
def _walsh_block(order: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (_sylvester(order) * scale).to(dtype=dtype, device=device)


def _walsh(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale`` x the Walsh-Hadamard (Sylvester order) along the last dim (a power of two):
    H_{2^k} = H_{2^a} (x) H_{2^b} (x) ..., each factor applied on its own axis of a reshaped view."""
    n = x.shape[-1]
    bits = n.bit_length() - 1
    orders = [1 << min(WALSH_BLOCK_BITS, bits - done) for done in range(0, bits, WALSH_BLOCK_BITS)]
    shape, y = x.shape, x.reshape(-1, n)
    inner = 1
    for i, order in enumerate(reversed(orders)):
        block = _walsh_block(order, scale if i == 0 else 1.0, x.dtype, x.device)
        if inner == 1:
            y = y.reshape(-1, order) @ block                  # symmetric: x H^T = x H
        else:
            y = torch.matmul(block, y.reshape(-1, order, inner))
        inner *= order
    if not orders and scale != 1.0:
        y = y * scale
    return y.reshape(shape)


def _cuda_kernel():
    try:
        from fast_hadamard_transform import hadamard_transform
    except ImportError:
        return None
    return hadamard_transform


@functools.lru_cache(maxsize=None)
def _random_orthogonal(m: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).contiguous()


@dataclass(frozen=True)
class OnlineTransform:
    """``x -> x T^T`` with ``T = A_m (x) H_p / sqrt(p)``, A_m orthonormal: exact and orthogonal."""

    size: int
    kind: str          # "hadamard" or "random-kronecker"
    m: int
    p: int
    seed: int = 0

    def small(self) -> torch.Tensor:
        """The orthonormal m x m factor (float64)."""
        if self.kind == "hadamard":
            return small_hadamard(self.m) / math.sqrt(self.m)
        return _random_orthogonal(self.m, self.seed)

    @property
    def macs_per_element(self) -> int:
        """What the transform costs per element in its butterfly form: log2(p) stages (one add or subtract
        each) plus an m-term dot product with the scale folded in, or the 1/sqrt(p) scaling alone when
        m = 1. (On CPU ``apply`` computes the same sums as small dense blocks, which is faster there.)"""
        return int(math.log2(self.p)) + (self.m if self.m > 1 else 1)

    def describe(self) -> str:
        if self.kind == "hadamard":
            return f"Hadamard {self.m} x {self.p} ({describe_construction(self.m)}, Sylvester {self.p})"
        return f"random orthogonal {self.m} (seed {self.seed}) x Walsh-Hadamard {self.p} (no Hadamard known)"

    def matrix(self, dtype=torch.float64) -> torch.Tensor:
        """The dense T (for tests and small sizes)."""
        return (torch.kron(self.small(), _sylvester(self.p)) / math.sqrt(self.p)).to(dtype)

    def column(self, j: int) -> torch.Tensor:
        """Column j of the dense T, from its two factors (no n x n matrix)."""
        small = self.small()[:, j // self.p]
        both = torch.arange(self.p) & (j % self.p)          # Sylvester: H[i, k] = (-1)^popcount(i & k)
        parity = torch.zeros(self.p, dtype=torch.long)
        for bit in range(max(1, self.p.bit_length())):
            parity ^= (both >> bit) & 1
        walsh = 1.0 - 2.0 * parity.to(torch.float64)
        return torch.kron(small, walsh) / math.sqrt(self.p)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x T^T along the last dim."""
        y = x.reshape(*x.shape[:-1], self.m, self.p)
        kernel = _cuda_kernel() if x.is_cuda else None
        if self.m > 1:     # the 1/sqrt(p) scale rides on the small factor: no extra pass
            y = kernel(y.contiguous(), 1.0) if kernel is not None else _walsh(y)
            y = torch.matmul(_scaled_small(self).to(device=x.device, dtype=x.dtype), y)
        else:
            scale = 1.0 / math.sqrt(self.p)
            y = kernel(y.contiguous(), scale) if kernel is not None else _walsh(y, scale)
        return y.reshape(x.shape)

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """x T along the last dim, the inverse of :meth:`apply` (T is orthogonal and its Walsh factor symmetric):
        e.g. a folded weight W T^T back to W."""
        y = _walsh(x.reshape(*x.shape[:-1], self.m, self.p), 1.0 / math.sqrt(self.p))
        return torch.matmul(self.small().T.to(device=x.device, dtype=x.dtype), y).reshape(x.shape)


@functools.lru_cache(maxsize=None)
def _scaled_small(transform: OnlineTransform) -> torch.Tensor:
    """The small factor with the Walsh-Hadamard's 1/sqrt(p) folded in, built once per transform."""
    return transform.small() / math.sqrt(transform.p)


def online_transform(n: int, choice: str = "auto", seed: int = 0) -> OnlineTransform:
    """The transform for size n: ``auto`` a Hadamard where one is constructible, else the seeded
    Kronecker fallback; ``hadamard`` a Hadamard or a clear error; ``random`` the fallback always."""
    if choice not in ("auto", "hadamard", "random"):
        raise ValueError(f"online transform must be 'auto', 'hadamard' or 'random', got {choice!r}")
    fac = factorize(n) if choice != "random" else None
    if fac is not None:
        return OnlineTransform(n, "hadamard", fac[0], fac[1])
    if choice == "hadamard":
        raise ValueError(f"no Hadamard construction for size {n}; use online_transform='auto' for the exact "
                         "seeded orthogonal fallback, or rotation='none'")
    power = n & -n
    return OnlineTransform(n, "random-kronecker", n // power, power, seed)


def fast_hadamard(x: torch.Tensor) -> torch.Tensor:
    """x H^T along the last dim, H = H_m (x) H_{2^a} / sqrt(n); exact (no approximation)."""
    return online_transform(x.shape[-1], "hadamard").apply(x)
