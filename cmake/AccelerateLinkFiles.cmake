# accelerate_link_files(<out> <target>...): the library files that linking the imported targets
# <target>... links, theirs and those of the targets they link in turn (spdlog::spdlog brings
# fmt::fmt), in link order. Header-only (INTERFACE) targets contribute none; what is not a target
# (-pthread) is left out: the program gets threads from LibTorch and Threads::Threads.
#
# A static libaccelerate.a leaves its private dependencies to the program's link. The installed
# package lists these files in accelerate::accelerate's link interface instead of the targets,
# so that find_package(accelerate) does not need spdlog's, fmt's or yaml-cpp's CMake packages.
function(accelerate_link_files out)
  set(files)
  set(seen)
  set(queue ${ARGN})
  string(TOUPPER "${CMAKE_BUILD_TYPE}" build_type)
  while(queue)
    list(POP_FRONT queue target)
    # $<LINK_ONLY:x> is still linked; other generator expressions are not resolved here.
    string(REGEX REPLACE "^\\$<LINK_ONLY:([^<>]+)>$" "\\1" target "${target}")
    if(target MATCHES "^\\$<" OR NOT TARGET "${target}" OR target IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${target}")
    get_target_property(imported "${target}" IMPORTED)
    get_target_property(type "${target}" TYPE)
    if(NOT imported)
      message(FATAL_ERROR "accelerate: ${target} is not an installed (imported) library; the "
                          "installed package of a static accelerate cannot name its file")
    endif()
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      set(file)
      get_target_property(configurations "${target}" IMPORTED_CONFIGURATIONS)
      foreach(config IN ITEMS ${build_type} ${configurations})
        if(NOT file)
          get_target_property(file "${target}" IMPORTED_LOCATION_${config})
        endif()
      endforeach()
      if(NOT file)
        get_target_property(file "${target}" IMPORTED_LOCATION)
      endif()
      if(NOT file)
        message(FATAL_ERROR "accelerate: no library file found for ${target}")
      endif()
      list(APPEND files "${file}")
    endif()
    get_target_property(dependencies "${target}" INTERFACE_LINK_LIBRARIES)
    if(dependencies)
      list(APPEND queue ${dependencies})
    endif()
  endwhile()
  set(${out} ${files} PARENT_SCOPE)
endfunction()
