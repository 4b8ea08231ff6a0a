# Included into llama.cpp's CMake projects (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml). llama.cpp is built with -march=native; this keeps Intel AMX
# out of it: CPUs and VMs can report AMX tiles that a process may not use, and
# ggml's AMX kernels then die with SIGILL. Explicit -mno-* flags win over -march.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
endif()
