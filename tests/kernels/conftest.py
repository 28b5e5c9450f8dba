"""Kernel tests run on a CUDA GPU, or on the CPU through Triton's interpreter.

Without CUDA this sets TRITON_INTERPRET=1 (unless the caller chose otherwise) before the kernels
are (re)imported: `triton.jit` decides between compiling and interpreting at decoration time.
"""

from __future__ import annotations

import os
import random
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

CAN_RUN_KERNELS = HAS_TRITON and (HAS_CUDA or INTERPRET)


def _patch_interpreter() -> None:
    """Work around two Triton 3.6 interpreter bugs (test-only; compiled kernels are unaffected).

    - loop bounds: scalars are 1-element arrays and numpy >= 2.4 refuses int() on them;
    - tl.dot on bf16: the interpreter multiplies the raw uint16 bit patterns.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as interp

    if getattr(interp, "_sched_harness_patched", False):
        return
    patch_tensor = interp._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    create_dot = interp.InterpreterBuilder.create_dot

    def _as_fp32(x):
        if x.dtype.scalar != tl.bfloat16:
            return x
        data = interp._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return interp.TensorHandle(data, tl.float32)

    def _create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, _as_fp32(a), _as_fp32(b), d, input_precision, max_num_imprecise_acc)

    interp._patch_lang_tensor = _patch_lang_tensor
    interp.InterpreterBuilder.create_dot = _create_dot
    interp._sched_harness_patched = True


def _reimport_triton_interpreted() -> None:
    """`triton.jit` picks compile vs interpret when a function is decorated, triton.language's
    own helpers (tl.max, tl.cdiv) included. If triton was imported before the flag was set
    (tests/conftest.py imports the harness, which imports the kernels), import it afresh."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.standard.max, JITFunction):
        return
    stale = [m for m in sys.modules if m == "triton" or m.startswith(("triton.", "kernels."))]
    for name in stale:
        if not name.startswith("triton._C"):  # the compiled extension cannot be loaded twice
            del sys.modules[name]
    import triton.language  # noqa: F401


if CAN_RUN_KERNELS and INTERPRET:
    _reimport_triton_interpreted()
    _patch_interpreter()


@pytest.fixture
def gen(request) -> torch.Generator:
    """A freshly seeded CPU generator per test; the seed is printed if the test fails."""
    seed = random.randrange(2**31)
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)
