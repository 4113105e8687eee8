# translate.cmake — a CUDA source (IN) as C++ for the CPU emulator (OUT; see cuemu.cpp):
#   k<<<grid, block[, shmem[, stream]]>>>(args)  ->  cuemu::launch(k, grid, block, ...)(args)
#   extern __shared__ T name[];                   ->  T *name = (T *)cuemu::dyn_shared();
# A #line keeps compiler messages and debuggers on the original file.
# cmake -DIN=kernels/cuda/ops.cu -DOUT=build/cuemu/ops.cu.cpp -P translate.cmake
file(READ "${IN}" s)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*(<[^<>;{}]*>)?)[ \t\r\n]*<<<" "cuemu::launch(\\1, "
       s "${s}")
string(REPLACE ">>>" ")" s "${s}")
string(REGEX REPLACE
       "extern[ \t]+__shared__[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+([A-Za-z_][A-Za-z0-9_]*)\\[\\];"
       "\\1 *\\2 = (\\1 *)cuemu::dyn_shared();" s "${s}")
if(s MATCHES "<<<")
  message(FATAL_ERROR "${IN}: a kernel launch translate.cmake does not understand")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${s}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
