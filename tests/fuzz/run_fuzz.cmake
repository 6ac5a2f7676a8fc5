# Runs a libFuzzer binary (built by tests/fuzz/CMakeLists.txt) for FUZZ_SECONDS over its seed
# corpus SEED_CORPUS and the inputs earlier runs found (WORK_DIR/corpus, where new ones go).
# Fails when the fuzzer finds a crash, a leak, a sanitizer report or an exception other than
# std::runtime_error / std::invalid_argument (the input is left in WORK_DIR).
#
#   cmake -DBINARY=<build>/tests/fuzz/safetensors_fuzz -DSEED_CORPUS=<repo>/tests/fuzz/corpus/safetensors
#         -DWORK_DIR=<dir> "-DOPTIONS=-dict=<repo>/tests/fuzz/safetensors.dict" -DFUZZ_SECONDS=5
#         -P tests/fuzz/run_fuzz.cmake
# OPTIONS (more libFuzzer flags) is "|"-separated (a ";" list would be split by add_test).
foreach(var BINARY SEED_CORPUS WORK_DIR FUZZ_SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzz.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT EXISTS ${BINARY})
  message(FATAL_ERROR "run_fuzz.cmake: ${BINARY} is not built (cmake --build the build folder)")
endif()
string(REPLACE "|" ";" options "${OPTIONS}")
get_filename_component(name ${BINARY} NAME)

file(MAKE_DIRECTORY ${WORK_DIR}/corpus)
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env
          ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
          UBSAN_OPTIONS=print_stacktrace=1
          ${BINARY} -max_total_time=${FUZZ_SECONDS} -timeout=10 -rss_limit_mb=4096
          -print_final_stats=1 ${options} -artifact_prefix=${WORK_DIR}/
          ${WORK_DIR}/corpus ${SEED_CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${name} failed (${rc}); the input is in ${WORK_DIR}")
endif()
