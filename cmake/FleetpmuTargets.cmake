# Helpers that keep every test registered the same way.
#
# fleetpmu_unit_test(NAME SOURCES... LIBS ...): a GoogleTest binary labelled `unit`; the asan
# preset builds and runs only these.
# fleetpmu_program(NAME SOURCES... LIBS ...): a binary in build/bin, skipped in the asan preset.
include(GoogleTest)

function(fleetpmu_unit_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name} PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
endfunction()
