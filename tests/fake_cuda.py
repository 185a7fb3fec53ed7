"""A CUDA device for tests on machines without one: tensors that say `cuda` but compute on the CPU.

Inside `fake_cuda()`, every tensor made on or moved to "cuda" is a `FakeCuda` wrapper around a CPU tensor, and any
operation that mixes such a tensor with a CPU tensor (other than the mixes CUDA itself allows: copies, 0-d CPU
scalars, CPU indices) raises the error a GPU would: "Expected all tensors to be on the same device". Unlike
FakeTensorMode, values are real, so `.item()`, `.tolist()` and data-dependent control flow work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
CUDA = torch.device("cuda", 0)
MIXING_ALLOWED = {aten.copy_.default, aten._to_copy.default, aten.index.Tensor, aten.index_put_.default,
                  aten.index_put.default, aten._index_put_impl_.default}
PASS_THROUGH = {aten.pin_memory.default, aten._pin_memory.default}


class FakeCuda(torch.Tensor):
    """A CPU tensor that reports device cuda:0 (to C++ it is a meta tensor, so no CUDA device guard is entered)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> FakeCuda:
        out = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(), dtype=elem.dtype,
                                                  device="meta", requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    @property
    def device(self) -> torch.device:  # what Python code sees
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    def tolist(self) -> Any:  # the real one refuses tensor subclasses
        return self.elem.tolist()

    def new_tensor(self, data: Any, dtype: torch.dtype | None = None, **kwargs: Any) -> torch.Tensor:
        """Made by C++ without dispatch on the meta device: build it on the fake CUDA device instead."""
        return FakeCuda(torch.tensor(data, dtype=dtype or self.dtype))

    def __repr__(self) -> str:
        return f"FakeCuda({self.elem!r})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # only reached outside fake_cuda()
        raise RuntimeError(f"{func} on a FakeCuda tensor outside fake_cuda()")


def _is_cuda(device: Any) -> bool:
    """A CUDA device, or meta: what C++ code (e.g. `new_tensor`) takes from a FakeCuda tensor."""
    return device is not None and torch.device(device).type in ("cuda", "meta")


def _unwrap(x: Any) -> Any:
    return x.elem if isinstance(x, FakeCuda) else x


def _cpu_device(x: Any) -> Any:
    return torch.device("cpu") if isinstance(x, (torch.device, str)) and _is_cuda(x) else x


class _Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PASS_THROUGH:
            return args[0]
        if func is aten.is_pinned.default:
            return False
        leaves, _ = tree_flatten((args, kwargs))
        fake = any(isinstance(a, FakeCuda) for a in leaves)
        cpu = [a for a in leaves if isinstance(a, torch.Tensor) and not isinstance(a, FakeCuda) and a.dim() > 0]
        if fake and cpu and func not in MIXING_ALLOWED:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"cuda:0 and cpu! ({func})")
        target = kwargs.get("device")
        out = func(*tree_map(_unwrap, args), **{k: _cpu_device(_unwrap(v)) for k, v in kwargs.items()})
        if func is aten._to_copy.default and target is not None:
            to_cuda = _is_cuda(target)
        else:
            to_cuda = _is_cuda(target) or (fake and (target is None or _is_cuda(target)))
        wrappers = {id(a.elem): a for a in leaves if isinstance(a, FakeCuda)}  # in-place ops return their input

        def wrap(x: Any) -> Any:
            if not isinstance(x, torch.Tensor) or isinstance(x, FakeCuda):
                return x
            if id(x) in wrappers:
                return wrappers[id(x)]
            return FakeCuda(x) if to_cuda else x

        return tree_map(wrap, out)


@contextmanager
def fake_cuda() -> Iterator[None]:
    """Run the block with `cuda` tensors faked on the CPU (and torch.cuda.is_available() still False)."""
    lazy_init, tensor = torch.cuda._lazy_init, torch.tensor

    def fake_tensor(data: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        out = tensor(data, *args, **kwargs)  # torch.tensor builds in C++ without dispatch
        return FakeCuda(out) if _is_cuda(device) else out

    torch.cuda._lazy_init = lambda: None  # factories with device="cuda" initialise CUDA before dispatching
    torch.tensor = fake_tensor
    try:
        with _Mode():
            yield
    finally:
        torch.cuda._lazy_init, torch.tensor = lazy_init, tensor
