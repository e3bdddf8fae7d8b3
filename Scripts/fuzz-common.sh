# Shared by the Scripts/fuzz-* scripts that link a harness against SwiftPM-built objects:
#   . Scripts/fuzz-common.sh
#   fuzz_build SCRATCH SPM_TARGET MODULE_NAME OUTPUT HARNESS_SOURCES...
# SwiftPM builds SPM_TARGET and its dependencies with coverage instrumentation and ASan
# into SCRATCH; swiftc then links the harness against every object of that build (a
# SwiftPM product would need a Package.swift target and would link libFuzzer's main into
# pvmm). Every C module map of the build is passed on, so a dependency that gains a C
# shim needs no change here. Only one SwiftPM target per scratch directory: the objects
# of another would be linked in too.
export PATH=/opt/swift/usr/bin:$PATH
# The Swift runtime's backtracer reads other threads' memory and trips ASan; libFuzzer
# prints the stack itself.
export SWIFT_BACKTRACE=enable=no

fuzz_build() {
    scratch=$1 target=$2 module=$3 output=$4
    shift 4
    swift build --scratch-path "$scratch" -c release --target "$target" \
        -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address >&2
    bin=$(swift build --scratch-path "$scratch" -c release --show-bin-path)
    # The build plugin's tools (ArgumentParser, *-tool) are built too but are not linked.
    objs=$(find "$bin" -path '*.build/*.o' -not -path '*-tool.build/*' -not -path '*/ArgumentParser*' \
                -not -path '*/generate_*')
    maps=""
    # C targets only: pvmm's own (SwiftPM writes their map at X.build/module.modulemap)
    # and those of checkouts (swift-system's CSystem).
    for m in $(find "$bin" -maxdepth 2 -path '*.build/module.modulemap') \
             $(find "$scratch/checkouts" -path '*/include/module.modulemap' 2>/dev/null); do
        maps="$maps -Xcc -fmodule-map-file=$m"
    done
    # System libraries the C shims link (Package.swift's linkedLibrary), by shim.
    libs=""
    [ -d "$bin/CURing.build" ] && libs="$libs -luring"
    [ -d "$bin/CSeccomp.build" ] && libs="$libs -lseccomp"
    # shellcheck disable=SC2086
    # FUZZ_OPT=-Onone keeps precondition messages (at -O a failed precondition only traps).
    swiftc -sanitize=fuzzer,address ${FUZZ_OPT:--O} -parse-as-library -swift-version 6 -module-name "$module" \
        -I "$bin/Modules" -I "$bin" $maps "$@" $objs $libs -o "$scratch/$output"
    mkdir -p "$scratch/artifacts"
}

# fuzz_run SCRATCH OUTPUT SECONDS CORPUS SEEDS [libFuzzer args...]: a bounded campaign
# with a per-input timeout (a hang is reported, not waited out); crashes land in
# SCRATCH/artifacts.
fuzz_run() {
    scratch=$1 output=$2 secs=$3 corpus=$4 seeds=$5
    shift 5
    mkdir -p "$scratch/$corpus" "$seeds"
    exec "$scratch/$output" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$scratch/artifacts/" "$@" "$scratch/$corpus" "$seeds"
}
