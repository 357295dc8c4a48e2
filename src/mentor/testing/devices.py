"""A pretend CUDA device on a CPU-only machine, so device-placement bugs fail in CPU CI.

A tensor or batch built on the CPU and mixed with a model on the GPU fails only on a GPU
("Expected all tensors to be on the same device ... index is on cpu"): every CPU test passes
while the first real GPU run crashes. Inside :func:`fake_cuda` a tensor sent to ``cuda`` (by
``.to``, ``.cuda()``, ``Module.to`` or a factory's ``device=``) becomes a :class:`OnFakeCuda`:
it reports ``device == cuda:0``, holds its numbers in a real CPU tensor and computes them on the
CPU, and every op on it checks its operands the way CUDA kernels do:

- CPU tensors mix with CUDA tensors only as 0-dim scalars, or as the indices of advanced
  indexing (``x[mask]``, ``x[ids] = v``), or across a copy (``.to``, ``copy_``);
- ``.numpy()`` (so ``np.asarray``) refuses, as it does on a real GPU tensor: ``.cpu()`` first.

Anything else raises ``RuntimeError("Expected all tensors to be on the same device ...")``, the
GPU's own error, naming the op. So a report run on a "GPU" model here computes the same numbers
as on the CPU and fails where the real GPU would. ``torch.cuda.is_available()`` stays False and
``torch.cuda`` functions are not faked: code that asks for memory or synchronises still needs a
real GPU (the e2e tests' ``--device`` option, ``tests/conftest.py``).

It needs no accelerator: ``torch.Tensor._make_wrapper_subclass`` makes a tensor that only
claims a device, as ``FakeTensor`` does, and a ``TorchFunctionMode`` turns ``device="cuda"``
into a CPU allocation before torch would try to start CUDA.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE_CUDA = torch.device("cuda", 0)

_aten = torch.ops.aten
# Ops whose tensor operands may sit on other devices on a real GPU.
_CROSS_DEVICE = {
    _aten.copy_.default,
    _aten._to_copy.default,
    _aten.lift_fresh.default,
    _aten.detach.default,
}
# Advanced indexing: CUDA takes index tensors (bool masks, int64 ids) from the CPU.
_CPU_INDICES = {
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
}


class OnFakeCuda(torch.Tensor):
    """A tensor that says it is on ``cuda:0`` and keeps its values in a CPU tensor ``elem``."""

    elem: torch.Tensor
    # Results are wrapped by __torch_dispatch__ alone (a .cpu() result must stay a plain tensor).
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnFakeCuda:
        made: OnFakeCuda = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.size(),
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=FAKE_CUDA,
            requires_grad=elem.requires_grad,
        )
        return made

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    def __repr__(self) -> str:  # type: ignore[override]
        return f"OnFakeCuda({self.elem!r})"

    def numpy(self, *, force: bool = False) -> Any:
        raise TypeError(
            "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
            "tensor to host memory first."
        )

    def tolist(self) -> Any:
        return self.elem.tolist()

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: Any,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        _check_devices(func, args, kwargs)
        if func is _aten._to_copy.default or func.overloadpacket is _aten.to:
            # (inference mode sends aten.to itself here, not only its _to_copy)
            leaving = any(
                _is_device(x) and torch.device(x).type == "cpu" for x in _targets(args, kwargs)
            )
            args, kwargs = tree_map(_on_host, (args, kwargs))
            if leaving:
                return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if _mutates_first(func):
            return args[0]
        return tree_map(_wrap, out)


def _is_device(x: Any) -> bool:
    return isinstance(x, torch.device | str)


def _targets(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
    """The devices a ``to`` names: its ``device``, a device argument, or another tensor's."""
    found = [kwargs.get("device"), *args[1:]]
    return [x.device if isinstance(x, torch.Tensor) else x for x in found if x is not None]


def _on_host(x: Any) -> Any:
    """The fake device, where an op names it, as the CPU its values live on."""
    return torch.device("cpu") if _is_device(x) and _is_fake_cuda(x) else x


def _unwrap(x: Any) -> Any:
    return x.elem if isinstance(x, OnFakeCuda) else x


def _wrap(x: Any) -> Any:
    return OnFakeCuda(x) if isinstance(x, torch.Tensor) and not isinstance(x, OnFakeCuda) else x


def _mutates_first(func: Any) -> bool:
    """An in-place op (``add_``, ``copy_``): it returns its first operand itself."""
    arguments = func._schema.arguments
    return bool(arguments) and arguments[0].alias_info is not None and arguments[0].is_write


def _check_devices(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    if func in _CROSS_DEVICE:
        return
    operands = args[1:] if func in _CPU_INDICES else args
    if func in _CPU_INDICES and not isinstance(args[0], OnFakeCuda):
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, "
            f"cpu and cuda:0! (indexing a cpu tensor with cuda indices in {func})"
        )
    flat, _ = tree_flatten((list(operands), dict(kwargs)))
    if func in _CPU_INDICES:
        flat = [x for x in flat if not (isinstance(x, torch.Tensor) and x.dtype in _INDEX)]
    for x in flat:
        if isinstance(x, torch.Tensor) and not isinstance(x, OnFakeCuda) and x.dim() > 0:
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                f"devices, cuda:0 and {x.device}! (a {tuple(x.shape)} {x.dtype} operand of "
                f"{func} is on {x.device})"
            )


_INDEX = {torch.bool, torch.uint8, torch.int64, torch.int32}


# Conversions to Python numbers: torch would take a (missing) CUDA device guard for them.
_TO_PYTHON = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
    torch.Tensor.__format__,
}


# Reading a tensor's properties and sizes records nothing for autograd.
_METADATA = {"__get__", "dim", "size", "numel", "stride", "is_contiguous", "__len__"}

# Composite ops that allocate on their operands' device below the Python dispatch key (where the
# fake cannot answer): run whole on the host, after the device check.
# Also the Python bindings that take a CUDA device guard, which a CPU-only build lacks.
_ON_HOST = {torch.nn.functional.scaled_dot_product_attention, torch.Tensor.nonzero, torch.nonzero}


def _is_fake_cuda(device: Any) -> bool:
    if device is None or isinstance(device, int):
        return False
    return torch.device(device).type == "cuda"


class _SendToFakeCuda(TorchFunctionMode):
    """Turns ``device="cuda"`` and ``.to("cuda")`` into CPU tensors wrapped as on cuda:0."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if torch.is_grad_enabled() and getattr(func, "__name__", "") not in _METADATA:
            _refuse_autograd(func, args, kwargs)
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            return _move(func, args, kwargs)
        _check_generator(func, args, kwargs)
        if func is torch.Tensor.copy_ and any(isinstance(x, OnFakeCuda) for x in args[:2]):
            _unwrap(args[0]).copy_(_unwrap(args[1]), **kwargs)  # across devices, as CUDA copies
            return args[0]
        if func is torch.Tensor.__getitem__:
            return _getitem(args[0], args[1])
        if func is torch.Tensor.__setitem__:
            return _setitem(args[0], args[1], args[2])
        if func in _ON_HOST and any(isinstance(x, OnFakeCuda) for x in args):
            _check_devices(func, args, kwargs)
            return tree_map(_wrap, func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs)))
        if func in _TO_PYTHON and isinstance(args[0], OnFakeCuda):
            return func(args[0].elem, *args[1:], **kwargs)  # a sync and a copy to the host
        if _is_fake_cuda(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
            return tree_map(_wrap, func(*args, **kwargs))
        return func(*args, **kwargs)


def _check_generator(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """A draw for the GPU takes a generator on the GPU (checked here: below, the dispatcher
    hands the op a new Python object for the same generator, without the mark)."""
    generator = kwargs.get("generator")
    if generator is None or getattr(generator, "on_fake_cuda", False):
        return
    on_gpu = _is_fake_cuda(kwargs.get("device")) or any(isinstance(x, OnFakeCuda) for x in args)
    if on_gpu:
        raise RuntimeError(
            "Expected a 'cuda' device type for generator but found 'cpu' "
            f"(in {getattr(func, '__name__', func)})"
        )


def _refuse_autograd(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Autograd on a claimed CUDA device aborts the process in a CPU-only build: refuse first."""
    flat, _ = tree_flatten((list(args), dict(kwargs)))
    if any(isinstance(x, OnFakeCuda) and x.requires_grad for x in flat):
        raise RuntimeError(
            f"{getattr(func, '__name__', func)}: the fake cuda device runs inference only "
            "(torch.no_grad); training on CUDA is checked on a real GPU"
        )


def _move(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    self, rest = args[0], list(args[1:])
    if func is torch.Tensor.cuda:
        target: Any = FAKE_CUDA
        dtype, non_blocking = None, bool(kwargs.get("non_blocking", False))
    else:
        if rest and isinstance(rest[0], OnFakeCuda):  # x.to(other): other's device and dtype
            rest = [FAKE_CUDA, rest[0].dtype, *rest[1:]]
        copy = bool(kwargs.pop("copy", False))
        memory_format = kwargs.pop("memory_format", None)
        target, dtype, non_blocking, _ = torch._C._nn._parse_to(*rest, **kwargs)
        del copy, memory_format
    if target is None:  # a dtype change only: stays where it is
        return func(*args, **kwargs)
    base = _unwrap(self)
    if not _is_fake_cuda(target):  # to the CPU (or meta): the real op
        return base.to(target, dtype=dtype, non_blocking=non_blocking)
    if isinstance(self, OnFakeCuda) and (dtype is None or dtype == self.dtype):
        return self  # already there, as .to returns self
    return OnFakeCuda(base.to("cpu", dtype=dtype, copy=True))


# Python indexing takes a CUDA device guard in C++, which a CPU-only build lacks: the fake
# device indexes ``elem`` with the CPU indices instead, after the GPU's checks.


def _check_index(x: torch.Tensor, index: Any) -> Any:
    flat, _ = tree_flatten(index)
    for i in flat:
        if isinstance(i, OnFakeCuda) and not isinstance(x, OnFakeCuda):
            raise RuntimeError(
                "indices should be either on cpu or on the same device as the indexed tensor (cpu)"
            )
    return tree_map(_unwrap, index)


def _getitem(x: torch.Tensor, index: Any) -> Any:
    plain = _check_index(x, index)
    if not isinstance(x, OnFakeCuda):
        return x[plain]
    return OnFakeCuda(x.elem[plain])


def _setitem(x: torch.Tensor, index: Any, value: Any) -> None:
    plain = _check_index(x, index)
    if isinstance(x, OnFakeCuda):
        if isinstance(value, torch.Tensor) and not isinstance(value, OnFakeCuda) and value.dim():
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                f"devices, cuda:0 and cpu! (assigning a {tuple(value.shape)} cpu tensor "
                "into a cuda tensor)"
            )
        x.elem[plain] = _unwrap(value)
    else:  # into a CPU tensor: a copy from the GPU is allowed
        x[plain] = _unwrap(value)


@contextmanager
def fake_cuda() -> Iterator[torch.device]:
    """Inside, ``cuda`` means a CPU that checks device placement like a GPU (module docstring).

    Yields the device to pass as ``device=``: ``with fake_cuda() as cuda: model.to(cuda)``.
    Inference only: gradients are off inside (autograd on a claimed CUDA device would abort a
    CPU-only process), and an op that would record them on a fake tensor raises."""
    # Module.to would otherwise set `param.data` to the fake tensor, which loses its CPU values:
    # new Parameter objects instead (tied weights become two equal copies).
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    generator, torch.Generator = torch.Generator, _Generator  # type: ignore[misc]
    run = threading.Thread.run
    # Modes are per thread: a thread started inside (the engine's decode loop) gets its own.
    threading.Thread.run = _in_fake_cuda(run)  # type: ignore[method-assign,assignment]
    try:
        with torch.no_grad(), _SendToFakeCuda():
            yield FAKE_CUDA
    finally:
        threading.Thread.run = run  # type: ignore[method-assign]
        torch.Generator = generator  # type: ignore[misc]
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)


class _Generator(torch.Generator):
    """``torch.Generator(device="cuda")`` inside :func:`fake_cuda`: a CPU generator marked as on
    the fake device, which the fake's sampling ops accept (a plain CPU one they refuse, as CUDA
    refuses a CPU generator for a GPU tensor). It draws what a CPU generator of its seed draws."""

    on_fake_cuda: bool

    def __new__(cls, device: Any = "cpu") -> _Generator:
        fake = _is_fake_cuda(device)
        made = super().__new__(cls, "cpu" if fake else device)  # type: ignore[call-arg]
        made.on_fake_cuda = fake
        return made

    def __init__(self, device: Any = "cpu") -> None:
        pass


def _in_fake_cuda(run: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def wrapped(thread: threading.Thread) -> None:
        with torch.no_grad(), _SendToFakeCuda():
            run(thread)

    return wrapped


def on_fake_cuda(x: torch.Tensor) -> bool:
    """Whether ``x`` was sent to the fake device (tests assert where results land)."""
    return isinstance(x, OnFakeCuda)


def device_unavailable(name: str) -> str | None:
    """Why device ``name`` (cpu, cuda, cuda:1, mps) cannot run here, or None when it can: what
    ``pytest --device`` skips the end-to-end tests with (``tests/conftest.py``)."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        return f"--device {name!r} is not a device: {error}"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"--device {name}: no CUDA device here"
        if (device.index or 0) >= count:
            return f"--device {name}: only {count} CUDA device(s) here"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else f"--device {name}: no MPS here"
    return f"--device {name}: mentor runs on cpu, cuda or mps"
