# Installs the built project into a fresh prefix, checks that the installed headers include
# nothing but LibTorch and the standard library, then configures, builds and runs consumer/
# against it with find_package(accelerate): alone, and on 2 processes through the installed
# launcher. Variables: BUILD_DIR, SOURCE_DIR, WORK_DIR.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()

file(GLOB headers "${WORK_DIR}/prefix/include/accelerate/*.h")
list(LENGTH headers count)
if(count LESS 10)
  message(FATAL_ERROR "only ${count} headers were installed")
endif()
foreach(header IN LISTS headers)
  file(STRINGS "${header}" includes REGEX "^#include <")
  foreach(line IN LISTS includes)
    string(REGEX REPLACE "^#include <([^>]*)>.*" "\\1" name "${line}")
    if(NOT name MATCHES "^(ATen|c10|torch)/" AND NOT name MATCHES "^[a-z_]+$")
      message(FATAL_ERROR "${header} includes <${name}>: public headers may include only "
                          "LibTorch and the standard library")
    endif()
  endforeach()
endforeach()

execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
                "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed: ${rc}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed: ${rc}")
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "${out}")
if(rc OR NOT out MATCHES "consumer ok 1 2")
  message(FATAL_ERROR "the consumer failed: ${rc} ${out}")
endif()
execute_process(COMMAND "${WORK_DIR}/prefix/bin/accelerate-cpp" launch --num_processes 2
                "${WORK_DIR}/build/consumer" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err TIMEOUT 300)
message(STATUS "${out}")
if(rc OR NOT out MATCHES "consumer ok 2 4")
  message(FATAL_ERROR "the consumer on 2 processes failed: ${rc} ${out} ${err}")
endif()
