# Install rules and Debian packages (CPack DEB), included from the top CMakeLists.txt after the
# components, so that their targets exist here.
#
# Two packages, one per CPack component (docs/deploy.md):
#   fleetpmu-server  fleetpmu-server, fleetpmuctl, /etc/fleetpmu/server.textproto, its unit,
#                    the Grafana dashboards and Prometheus alert rules in share/fleetpmu
#   fleetpmu-agent   fleetpmu-agent, fleetpmu-shim, fleetpmu-pmu, /etc/fleetpmu/agent.textproto
#                    and shim.textproto, their units
# Make them after a build with `cpack --config build/CPackConfig.cmake` (or `cd build && cpack`):
# build/packages/fleetpmu-{server,agent}_<version>_<arch>.deb. cpack installs what is built; it
# builds nothing. tests/deploy/packages_test.sh checks what the .debs hold.
#
# The architecture is the one the compiler targets, not the build machine's: an arm64 cross
# build gives arm64 packages. Files under /etc/fleetpmu are conffiles (dpkg keeps the
# operator's edits on upgrade). The maintainer scripts (deploy/debian/*.in) make the fleetpmu
# system user and restart running services on upgrade; nothing is started on a first install.
#
# FLEETPMU_PACKAGE_PROGRAMS (set here) lists the programs the packages ship, and
# FLEETPMU_PACKAGE_CONFIGS the configs they put in /etc/fleetpmu: tests/deploy checks that every
# program and config a unit, manifest or compose file names is one of them.

include(GNUInstallDirs)

# Absolute on purpose: Debian conffiles live in /etc whatever the prefix (/usr for the
# packages). A developer installing elsewhere sets -DFLEETPMU_INSTALL_CONFDIR=DIR (or DESTDIR).
# The units run /usr/bin/<program>: they are written for the packages' prefix.
set(FLEETPMU_INSTALL_CONFDIR "/etc/fleetpmu" CACHE PATH "Where the daemons' configs are installed")
set(FLEETPMU_INSTALL_UNITDIR "lib/systemd/system" CACHE STRING
    "systemd system units, relative to the install prefix")

set(FLEETPMU_PACKAGE_PROGRAMS "")
set(_fleetpmu_components "")

# component -> programs; a program that this tree does not build (FLEETPMU_COMPONENTS, the
# unit-tests-only preset) leaves its component, and a component left empty is not packaged.
set(_fleetpmu_server_programs fleetpmu-server fleetpmuctl)
set(_fleetpmu_agent_programs fleetpmu-agent fleetpmu-shim fleetpmu-pmu)
foreach(component IN ITEMS server agent)
  set(_complete TRUE)
  foreach(program IN LISTS _fleetpmu_${component}_programs)
    if(NOT TARGET ${program})
      set(_complete FALSE)
    endif()
  endforeach()
  if(_complete)
    install(TARGETS ${_fleetpmu_${component}_programs}
            RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT ${component})
    list(APPEND FLEETPMU_PACKAGE_PROGRAMS ${_fleetpmu_${component}_programs})
    list(APPEND _fleetpmu_components ${component})
  endif()
endforeach()

# On arm64 the shim drives /dev/kvm; every other build of the shim refuses BACKEND_KVM
# (hypervisor-shim/shim_main.cc), so there the package's shim config is the simulated host.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(FLEETPMU_PACKAGE_SHIM_CONFIG ${FLEETPMU_SOURCE_ROOT}/deploy/examples/shim-kvm.textproto)
else()
  set(FLEETPMU_PACKAGE_SHIM_CONFIG ${FLEETPMU_SOURCE_ROOT}/deploy/examples/shim-sim.textproto)
endif()

# NAME=SOURCE of every config installed in FLEETPMU_INSTALL_CONFDIR, for tests/deploy.
set(FLEETPMU_PACKAGE_CONFIGS
    server.textproto=${FLEETPMU_SOURCE_ROOT}/deploy/examples/server.textproto
    agent.textproto=${FLEETPMU_SOURCE_ROOT}/deploy/examples/agent.textproto
    shim.textproto=${FLEETPMU_PACKAGE_SHIM_CONFIG})

set(_fleetpmu_server_units fleetpmu-server.service)
set(_fleetpmu_agent_units fleetpmu-agent.service fleetpmu-shim.service)
set(_fleetpmu_server_examples PATTERN "server*.textproto")
set(_fleetpmu_agent_examples PATTERN "agent*.textproto" PATTERN "shim*.textproto"
                             PATTERN "sim-*.textproto")
set(_fleetpmu_server_conffiles ${FLEETPMU_INSTALL_CONFDIR}/server.textproto)
set(_fleetpmu_agent_conffiles ${FLEETPMU_INSTALL_CONFDIR}/agent.textproto
                              ${FLEETPMU_INSTALL_CONFDIR}/shim.textproto)

if("server" IN_LIST _fleetpmu_components)
  install(FILES ${FLEETPMU_SOURCE_ROOT}/deploy/examples/server.textproto
          DESTINATION ${FLEETPMU_INSTALL_CONFDIR} COMPONENT server)
  # Operators load these into their own Grafana and Prometheus (docs/deploy.md).
  install(DIRECTORY ${FLEETPMU_SOURCE_ROOT}/dashboards/
          DESTINATION ${CMAKE_INSTALL_DATADIR}/fleetpmu/dashboards COMPONENT server OPTIONAL
          FILES_MATCHING PATTERN "*.json" PATTERN "*.yml" PATTERN "*.yaml"
          PATTERN "tests" EXCLUDE)
endif()
if("agent" IN_LIST _fleetpmu_components)
  install(FILES ${FLEETPMU_SOURCE_ROOT}/deploy/examples/agent.textproto
          DESTINATION ${FLEETPMU_INSTALL_CONFDIR} COMPONENT agent)
  install(FILES ${FLEETPMU_PACKAGE_SHIM_CONFIG}
          DESTINATION ${FLEETPMU_INSTALL_CONFDIR} RENAME shim.textproto COMPONENT agent)
endif()

foreach(component IN LISTS _fleetpmu_components)
  set(package fleetpmu-${component})
  foreach(unit IN LISTS _fleetpmu_${component}_units)
    install(FILES ${FLEETPMU_SOURCE_ROOT}/deploy/systemd/${unit}
            DESTINATION ${FLEETPMU_INSTALL_UNITDIR} COMPONENT ${component})
  endforeach()
  # The package's example configs go to its docs too: the conffiles may be edited, these stay
  # as shipped.
  install(FILES ${FLEETPMU_SOURCE_ROOT}/docs/deploy.md ${FLEETPMU_SOURCE_ROOT}/docs/config.md
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${package} COMPONENT ${component})
  install(DIRECTORY ${FLEETPMU_SOURCE_ROOT}/deploy/examples/
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${package}/examples COMPONENT ${component}
          FILES_MATCHING ${_fleetpmu_${component}_examples})

  # Maintainer scripts and the conffiles list, one set per package.
  set(FLEETPMU_DEB_PACKAGE ${package})
  list(JOIN _fleetpmu_${component}_units " " FLEETPMU_DEB_UNITS)
  if(component STREQUAL "agent")
    set(FLEETPMU_DEB_KVM_GROUP yes)
  else()
    set(FLEETPMU_DEB_KVM_GROUP no)
  endif()
  set(_control_dir ${CMAKE_BINARY_DIR}/debian/${package})
  foreach(script IN ITEMS postinst prerm postrm)
    configure_file(${FLEETPMU_SOURCE_ROOT}/deploy/debian/${script}.in ${_control_dir}/${script}
                   @ONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                   GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  list(JOIN _fleetpmu_${component}_conffiles "\n" _conffiles)
  file(WRITE ${_control_dir}/conffiles "${_conffiles}\n")
  string(TOUPPER ${component} COMPONENT)
  set(CPACK_DEBIAN_${COMPONENT}_PACKAGE_CONTROL_EXTRA
      ${_control_dir}/conffiles ${_control_dir}/postinst ${_control_dir}/prerm
      ${_control_dir}/postrm)
  set(CPACK_DEBIAN_${COMPONENT}_PACKAGE_NAME ${package})
  # shlibdeps finds the libraries; adduser runs in postinst.
  set(CPACK_DEBIAN_${COMPONENT}_PACKAGE_DEPENDS "adduser")
endforeach()

# First line: the synopsis; CPack indents the rest as the extended description.
set(CPACK_DEBIAN_SERVER_DESCRIPTION
    "fleetpmu server: telemetry ingest, storage, Query API and metrics
fleetpmu-server receives PMU telemetry from the fleetpmu agents of virtualized ARM hosts
over gRPC with mTLS, stores it in SQLite, exports Prometheus metrics and answers the Query
API; fleetpmuctl queries it.")
set(CPACK_DEBIAN_AGENT_DESCRIPTION
    "fleetpmu agent and hypervisor shim for ARM hosts
fleetpmu-shim runs guests with a partitioned PMUv3 on KVM and records what happens to the
PMU at every vCPU switch; fleetpmu-agent spools that telemetry durably and delivers it to
fleetpmu-server exactly once. fleetpmu-pmu replays register-level PMU traces.")

# The Debian architecture of the compiler's target: dpkg-architecture maps the target triple
# (aarch64-linux-gnu -> arm64); without one (a non-multiarch toolchain) the processor name is
# mapped, and only then is the build machine asked.
set(_fleetpmu_deb_arch "")
if(CMAKE_LIBRARY_ARCHITECTURE)
  execute_process(COMMAND dpkg-architecture -t ${CMAKE_LIBRARY_ARCHITECTURE} -qDEB_HOST_ARCH
                  OUTPUT_VARIABLE _fleetpmu_deb_arch OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_QUIET RESULT_VARIABLE _result)
  if(NOT _result EQUAL 0)
    set(_fleetpmu_deb_arch "")
  endif()
endif()
if(NOT _fleetpmu_deb_arch)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    set(_fleetpmu_deb_arch arm64)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(_fleetpmu_deb_arch amd64)
  else()
    execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE _fleetpmu_deb_arch
                    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fleetpmu)
set(CPACK_PACKAGE_VENDOR fleetpmu)
set(CPACK_PACKAGE_CONTACT "fleetpmu maintainers <fleetpmu@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_COMPONENTS_ALL ${_fleetpmu_components})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${_fleetpmu_deb_arch})
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
