# Included right after llama.cpp's project() (CMAKE_PROJECT_llama.cpp_INCLUDE) by `make llama`.
# llama-cpp-python forces llama.cpp's `common` library on, yet its bindings load only libllama
# and libggml: common (chat templates, JSON, an HTTP client) is a third of the build for nothing.
# A plain variable here shadows that forced cache entry for llama.cpp's own directory.
set(LLAMA_BUILD_COMMON OFF)
