# Builds a libFuzzer target with clang++ -fsanitize=fuzzer,address,undefined against LibTorch
# and fuzzes it for FUZZ_SECONDS from its seed corpus tests/fuzz/corpus/<FUZZ_TARGET>. Fails
# when the build fails or the fuzzer finds a crash, a leak, a sanitizer report or an exception
# other than std::runtime_error / std::invalid_argument (the input is left in WORK_DIR).
#   FUZZ_TARGET=safetensors   tests/fuzz/safetensors_fuzz.cpp over src/safetensors.cpp
#   FUZZ_TARGET=torch_pickle  tests/fuzz/torch_pickle_fuzz.cpp over src/torch_pickle.cpp
#
#   cmake -DFUZZ_TARGET=safetensors -DCLANGXX=clang++ -DSOURCE_DIR=<repo> -DWORK_DIR=<dir>
#         "-DINCLUDE_DIRS=a|b" -DTORCH_LIBRARY_DIR=<dir> "-DCXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=1"
#         -DFUZZ_SECONDS=60 -P tests/fuzz/run_fuzz.cmake
# INCLUDE_DIRS is "|"-separated (a ";" list would be split by add_test).
foreach(var FUZZ_TARGET CLANGXX SOURCE_DIR WORK_DIR TORCH_LIBRARY_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzz.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT DEFINED FUZZ_SECONDS)
  set(FUZZ_SECONDS 60)
endif()

set(fuzz_dir ${SOURCE_DIR}/tests/fuzz)
if(FUZZ_TARGET STREQUAL "safetensors")
  set(sources ${fuzz_dir}/safetensors_fuzz.cpp ${SOURCE_DIR}/src/safetensors.cpp
      ${SOURCE_DIR}/src/files.cpp)
  set(options -dict=${fuzz_dir}/safetensors.dict)
elseif(FUZZ_TARGET STREQUAL "torch_pickle")
  set(sources ${fuzz_dir}/torch_pickle_fuzz.cpp ${SOURCE_DIR}/src/torch_pickle.cpp
      ${SOURCE_DIR}/src/files.cpp)
  set(options)
else()
  message(FATAL_ERROR "run_fuzz.cmake: unknown FUZZ_TARGET '${FUZZ_TARGET}'")
endif()

set(include_flags -I${SOURCE_DIR}/include -I${SOURCE_DIR}/src)
string(REPLACE "|" ";" include_dirs "${INCLUDE_DIRS}")
foreach(dir IN LISTS include_dirs)
  # -isystem on the compiler's own directories would break #include_next.
  if(dir AND NOT dir MATCHES "^/usr(/local)?/include/?$")
    list(APPEND include_flags -isystem ${dir})
  endif()
endforeach()
separate_arguments(cxx_flags UNIX_COMMAND "${CXX_FLAGS}")

set(work ${WORK_DIR}/${FUZZ_TARGET})
file(MAKE_DIRECTORY ${work}/corpus)
set(binary ${work}/${FUZZ_TARGET}_fuzz)
string(TIMESTAMP start "%s")
execute_process(
  COMMAND ${CLANGXX} -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
          -fno-sanitize-recover=all ${cxx_flags} ${include_flags} ${sources}
          -L${TORCH_LIBRARY_DIR} -Wl,-rpath,${TORCH_LIBRARY_DIR} -ltorch -ltorch_cpu -lc10
          -o ${binary}
  RESULT_VARIABLE rc)
string(TIMESTAMP stop "%s")
math(EXPR seconds "${stop} - ${start}")
message(STATUS "built ${FUZZ_TARGET}_fuzz in ${seconds} s")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building ${FUZZ_TARGET}_fuzz failed (${rc})")
endif()

execute_process(
  COMMAND ${CMAKE_COMMAND} -E env
          ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
          UBSAN_OPTIONS=print_stacktrace=1
          ${binary} -max_total_time=${FUZZ_SECONDS} -timeout=10 -rss_limit_mb=4096
          -print_final_stats=1 ${options} -artifact_prefix=${work}/
          ${work}/corpus ${fuzz_dir}/corpus/${FUZZ_TARGET}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZ_TARGET}_fuzz failed (${rc}); the input is in ${work}")
endif()
