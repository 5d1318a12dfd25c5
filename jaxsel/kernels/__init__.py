"""Pure JAX kernels: jit-able functions over arrays, no I/O, no device or mesh code (callers
apply jit and shardings once, at the method layer)."""
