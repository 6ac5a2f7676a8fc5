# Installs the built project into a fresh prefix, checks that the installed headers include
# nothing but LibTorch and the standard library and that the package's CMake files ask for none
# of the private dependencies (spdlog, fmt, nlohmann-json, yaml-cpp), then configures, builds
# and runs consumer/ against it with find_package(accelerate), those packages made unfindable:
# alone, and on 2 processes through the installed launcher. Variables: BUILD_DIR, SOURCE_DIR,
# WORK_DIR.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()

file(GLOB_RECURSE headers "${WORK_DIR}/prefix/include/accelerate/*.h")
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

# The private dependencies are no business of the package's CMake files: neither
# find_dependency() nor their targets (a static library names their library files instead).
file(GLOB package_files "${WORK_DIR}/prefix/lib*/cmake/accelerate/*.cmake")
if(NOT package_files)
  message(FATAL_ERROR "no package files were installed")
endif()
foreach(package_file IN LISTS package_files)
  file(READ "${package_file}" text)
  foreach(pattern "find_dependency\\((nlohmann_json|spdlog|fmt|yaml-cpp)[^)]*\\)"
                  "(nlohmann_json|spdlog|fmt)::[a-z_]+" "[;\":]yaml-cpp[;\">]")
    if(text MATCHES "${pattern}")
      message(FATAL_ERROR "${package_file} asks for a private dependency (${CMAKE_MATCH_0}); "
                          "find_package(accelerate) must work without spdlog's, fmt's, "
                          "nlohmann-json's or yaml-cpp's CMake packages")
    endif()
  endforeach()
endforeach()

# The consumer is configured as on a machine without those packages.
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
                "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" -DCMAKE_BUILD_TYPE=Release
                -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON
                -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON
                -DCMAKE_DISABLE_FIND_PACKAGE_yaml-cpp=ON
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
