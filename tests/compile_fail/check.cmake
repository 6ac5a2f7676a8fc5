# Builds TARGET in BUILD_DIR, which must fail, and checks its errors against SOURCE: one error
# per line of SOURCE marked `// expect: <message>`, and each <message> in the compiler's output
# (so that every refusal is one short static_assert, not a cascade of template errors).
# Variables: BUILD_DIR, TARGET, SOURCE.
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(APPEND out "${err}")
string(ASCII 27 escape)
string(REGEX REPLACE "${escape}\\[[0-9;]*[mK]" "" out "${out}")
string(REPLACE ";" "," out "${out}")  # one list element per error line
if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled: every line marked `expect:` in ${SOURCE} must fail")
endif()

file(STRINGS "${SOURCE}" marked REGEX "// expect: ")
list(LENGTH marked expected_count)
string(REGEX MATCHALL "[^\n]*error:[^\n]*" errors "${out}")
list(LENGTH errors error_count)
set(problems "")
foreach(line IN LISTS marked)
  string(REGEX REPLACE ".*// expect: " "" message "${line}")
  string(FIND "${out}" "${message}" at)
  if(at EQUAL -1)
    string(APPEND problems "\n  missing: ${message}")
  endif()
endforeach()
if(NOT error_count EQUAL expected_count)
  string(APPEND problems "\n  ${error_count} errors, expected ${expected_count} (one per refusal)")
endif()
if(problems)
  message(FATAL_ERROR "${TARGET}:${problems}\n\ncompiler output:\n${out}")
endif()
message(STATUS "${TARGET}: ${error_count} refusals, each one error with its message")
