# pilotfish: vendored pure-Python wrapt. The upstream file tries the C extension
# `._wrappers` first; a compiled extension is tied to one interpreter ABI and the
# agent tree serves every CPython from 3.8 on, so the vendored copy never loads it.
from .wrappers import (ObjectProxy, CallableObjectProxy,  # noqa: F401
        PartialCallableObjectProxy, FunctionWrapper,
        BoundFunctionWrapper, _FunctionWrapperBase)
