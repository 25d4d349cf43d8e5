# Copied from ../shared/tools/ros_wheels/ros_wheels_compat.cmake (only these two lines added; notes on building
# interface packages against the PyPI ROS 2 wheels) so that a clean clone builds test/ros_interfaces alone.
# Workarounds for building ROS interface packages against the PyPI ROS 2 wheels (ros-python-wheels).
# Usable as include() from a CMakeLists.txt or, for unmodified third-party packages,
# as -DCMAKE_PROJECT_INCLUDE=<this file>.
include_guard(GLOBAL)
# 1. Under pip/scikit-build-core (SKBUILD), the wheels' CMake/ament files live in the venv or in pip's
#    isolated build env ("overlay"): put that prefix on CMAKE_PREFIX_PATH and AMENT_PREFIX_PATH.
if(SKBUILD)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import pathlib, rosidl_adapter; print(pathlib.Path(rosidl_adapter.__file__).resolve().parents[4])"
    OUTPUT_VARIABLE _ros_prefix OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  message(STATUS "ros_wheels_compat: ROS wheels prefix ${_ros_prefix}")
  list(PREPEND CMAKE_PREFIX_PATH "${_ros_prefix}")
  if("$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
    set(ENV{AMENT_PREFIX_PATH} "${_ros_prefix}")
  else()
    set(ENV{AMENT_PREFIX_PATH} "${_ros_prefix}:$ENV{AMENT_PREFIX_PATH}")
  endif()
endif()
# 2. The wheels' exported targets carry paths of the machine that built them:
#    <pkg>::<pkg>__rosidl_generator_py -> /opt/python/cp311-cp311/include/python3.11 and .../numpy/_core/include
#    (CMake: "Imported target ... includes non-existent path"), fastdds -> /usr/lib64/libtinyxml2.so.
#    At the end of the top-level CMakeLists.txt, drop paths that do not exist and add this Python's includes.
function(_ros_wheels_fix_imported_targets)
  get_directory_property(_imported DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  set(_n 0)
  foreach(_t IN LISTS _imported)
    foreach(_prop INTERFACE_LINK_LIBRARIES INTERFACE_INCLUDE_DIRECTORIES)
      get_target_property(_vals ${_t} ${_prop})
      if(NOT _vals)
        continue()
      endif()
      set(_keep "")
      set(_changed FALSE)
      foreach(_v IN LISTS _vals)
        if(IS_ABSOLUTE "${_v}" AND NOT _v MATCHES "^\\$<" AND NOT EXISTS "${_v}")
          set(_changed TRUE)
        else()
          list(APPEND _keep "${_v}")
        endif()
      endforeach()
      if(_changed)
        if(_prop STREQUAL "INTERFACE_INCLUDE_DIRECTORIES")
          if(NOT Python3_NumPy_INCLUDE_DIRS)
            find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
          endif()
          list(APPEND _keep ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
        endif()
        set_property(TARGET ${_t} PROPERTY ${_prop} "${_keep}")
        math(EXPR _n "${_n} + 1")
      endif()
    endforeach()
  endforeach()
  message(STATUS "ros_wheels_compat: fixed ${_n} imported target properties")
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _ros_wheels_fix_imported_targets)
