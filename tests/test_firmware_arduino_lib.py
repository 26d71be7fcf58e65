"""The TensorFlow Lite Micro Arduino library ``kws-edge flash`` builds, and the arduino-cli commands it runs.

arduino-cli and the arduino:mbed_nano core cannot be installed here (and there is no board), so each part
is checked against what their documentation and sources say they do:

- Arduino library specification (arduino-cli docs/library-specification.md): ``precompiled=true`` with
  ``ldflags``; the archive in ``src/{build.mcu}/{fpu}-{float-abi}``; only ``src`` is on the include path;
  source files of a ``precompiled=true`` library are still compiled (so the library ships none).
- arduino-cli internal/arduino/builder/libraries.go (findExpectedPrecompiledLibFolder, compileLibrary): the
  folder comes from the first ``*fpu*`` and ``*float-abi*`` arguments of the resolved recipe.cpp.o.pattern;
  the link gets ``"-L<folder>" <ldflags> -l<name>`` for each ``lib<name>.a`` there, inside
  compiler.libraries.ldflags.
- ArduinoCore-mbed platform.txt and boards.txt (nano33ble: build.mcu=cortex-m4, build.fpu=-mfpu=fpv4-sp-d16,
  build.float-abi=-mfloat-abi=softfp), variants/ARDUINO_NANO33BLE/cxxflags.txt and ldflags.txt (mbed_nano
  4.2.1): recipe.cpp.o.pattern puts ``{compiler.cpp.extra_flags}`` after ``@cxxflags.txt`` (with its
  ``-std=gnu++14``), so the build property's ``-std=gnu++17`` wins; recipe.c.combine.pattern links with
  ``--specs=nosys.specs -Wl,--start-group -lstdc++ -lsupc++ -lm -lc -lgcc -lnosys
  {compiler.libraries.ldflags} -Wl,--end-group``.

The real arm-none-eabi-g++ compiles every sketch file with those flags and links the sketch against the
precompiled archive. What is not here is stood in for: the core's Arduino.h/PDM.h by
mcu_firmware/host/nano/, its main() and libmbed.a by a main() calling setup() and loop() and by nano_standins.cpp
(instead of audio_provider.cpp's PDM microphone), its linker script by the toolchain's default. arduino-cli
itself is a script that records its command line (tests.test_firmware_support.fake_arduino_cli).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kws_edge import firmware
from kws_edge.flash import BUILD_PROPERTY, FQBN, LIBRARY_NAME
from tests.test_firmware_support import (
    HOST_DIR,
    TFLM_DIR,
    arduino_lib_tools_missing,
    build_arduino_lib,
    fake_arduino_cli,
    recorded_argv,
)
from tests.test_service_support import KWS_EDGE, hermetic_env

pytestmark = pytest.mark.skipif(arduino_lib_tools_missing() is not None, reason=str(arduino_lib_tools_missing()))

# variants/ARDUINO_NANO33BLE/cxxflags.txt of arduino:mbed_nano 4.2.1, in order ("@cxxflags.txt" on the
# core's command line).
CORE_CXXFLAGS = ["-Wvla", "-c", "-fno-rtti", "-std=gnu++14", "-DAPPLICATION_ADDR=0x10000",
                 "-DAPPLICATION_SIZE=0xf0000", "-DMBED_RAM_SIZE=0x40000", "-DMBED_RAM_START=0x20000000",
                 "-DMBED_ROM_SIZE=0x100000", "-DMBED_ROM_START=0x0", "-DMBED_TRAP_ERRORS_ENABLED=1", "-Os",
                 "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter",
                 "-fdata-sections", "-ffunction-sections", "-fmessage-length=0", "-fno-exceptions",
                 "-fomit-frame-pointer", "-funsigned-char", "-mcpu=cortex-m4", "-mfloat-abi=softfp",
                 "-mfpu=fpv4-sp-d16", "-mthumb"]
# ldflags.txt of the same variant without its -Wl,--wrap options (they wrap main and malloc into libmbed.a).
CORE_LDFLAGS = ["-Wl,--gc-sections", "-Wl,-n", "-mcpu=cortex-m4", "-mfloat-abi=softfp", "-mfpu=fpv4-sp-d16",
                "-mthumb"]
WARNINGS = ["-Wall", "-Wextra", "-Werror"]  # the IDE's "all" warning level, and errors: our own files
MAIN_CPP = "// Like the core's main.cpp: setup() once, then loop() forever.\n" \
           "void setup();\nvoid loop();\nint main() {\n  setup();\n  for (;;) loop();\n}\n"


@pytest.fixture(scope="session")
def xdg_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$XDG_CACHE_HOME for the session: flash keeps its libraries in kws_edge/arduino under it."""
    return tmp_path_factory.getbasetemp() / "xdg-cache"


@pytest.fixture(scope="session")
def library(xdg_cache: Path, tflm_build: Path) -> Path:
    """The library as kws-edge flash builds it (``make nano-lib``), where flash looks for it with
    XDG_CACHE_HOME=xdg_cache; it packs the session's TFLM build (the QEMU tests' objects, same flags)."""
    return build_arduino_lib(xdg_cache / "kws_edge" / "arduino", tflm_build)


def _properties(library: Path) -> dict[str, str]:
    lines = (library / "library.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _cpp_command(library: Path, core: Path, source: Path, obj: Path) -> list[str]:
    """recipe.cpp.o.pattern for the Nano 33 BLE with kws-edge flash's build property (the core's own -I,
    -iprefix and @includes.txt replaced by the stand-ins' folder, which also holds the sketch's headers
    for the stand-ins)."""
    extra = BUILD_PROPERTY.split("=", 1)[1].split()
    ino = ["-x", "c++", "-include", "Arduino.h"] if source.suffix == ".ino" else []  # as the .ino.cpp
    return ["arm-none-eabi-g++", "-c", *WARNINGS, "-g3", "-nostdlib", *CORE_CXXFLAGS, "-DARDUINO_ARCH_NRF52840",
            "-MMD", "-mcpu=cortex-m4", "-mfloat-abi=softfp", "-mfpu=fpv4-sp-d16", "-DARDUINO=10607",
            "-DARDUINO_ARDUINO_NANO33BLE", "-DARDUINO_ARCH_MBED_NANO", "-DARDUINO_ARCH_MBED",
            "-DARDUINO_LIBRARY_DISCOVERY_PHASE=0", f"-I{library / 'src'}", *extra, f"-I{core}", *ino,
            str(source), "-o", str(obj)]


def _precompiled_folder(library: Path, cpp_command: list[str]) -> Path:
    """arduino-cli's findExpectedPrecompiledLibFolder: src/{build.mcu}/{fpu}-{float-abi} from the first
    arguments naming them."""
    fpu = next(a.split("=")[1] for a in cpp_command if "fpu" in a and "=" in a)
    abi = next(a.split("=")[1] for a in cpp_command if "float-abi" in a and "=" in a)
    return library / "src" / "cortex-m4" / f"{fpu}-{abi}"


def _libraries_ldflags(library: Path, folder: Path) -> list[str]:
    """compiler.libraries.ldflags as arduino-cli's compileLibrary sets it for a precompiled library."""
    libs = [f"-l{p.stem[3:]}" for p in sorted(folder.iterdir()) if p.name.startswith("lib") and p.suffix == ".a"]
    return [f"-L{folder}", *shlex.split(_properties(library).get("ldflags", "")), *libs]


def _build_sketch(library: Path, sketch: Path, work: Path) -> tuple[Path, list[str]]:
    """Compile every sketch file with the Nano's flags, link all but audio_provider with the stand-ins and
    main(); return the ELF and the linker's output."""
    core = work / "core"  # the core's headers: Arduino.h and PDM.h only (no TensorFlowLite.h of its own)
    core.mkdir(parents=True)
    for name in ("Arduino.h", "PDM.h"):
        shutil.copy(HOST_DIR / "nano" / name, core / name)
    standins = work / "standins"  # the stand-ins for the core's code, with the sketch header they implement
    standins.mkdir()
    for path in (HOST_DIR / "nano" / "nano_standins.cpp", HOST_DIR / "nano" / "nano_standin.h",
                 sketch / "audio_provider.h"):
        shutil.copy(path, standins / path.name)
    (standins / "main.cpp").write_text(MAIN_CPP)
    sources = sorted(p for p in sketch.iterdir() if p.suffix in (".cpp", ".ino"))
    sources += [standins / "nano_standins.cpp", standins / "main.cpp"]
    commands = {src: _cpp_command(library, core, src, work / f"{src.name}.o") for src in sources}

    def compile_one(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(commands, pool.map(compile_one, commands.values()), strict=True))
    for src, res in results.items():
        assert res.returncode == 0, f"{src.name}:\n{shlex.join(res.args)}\n{res.stderr[-4000:]}"
    objects = [str(work / f"{src.name}.o") for src in sources if src.name != "audio_provider.cpp"]
    folder = _precompiled_folder(library, commands[sources[0]])
    elf = work / "kws_nano.ino.elf"
    link = ["arm-none-eabi-g++", f"-L{work}", "-Wl,--gc-sections", "-Wl,--as-needed", *CORE_LDFLAGS,
            "--specs=nosys.specs", "-o", str(elf), *objects, "-Wl,--start-group", "-lstdc++", "-lsupc++", "-lm",
            "-lc", "-lgcc", "-lnosys", *_libraries_ldflags(library, folder), "-Wl,--end-group"]
    res = subprocess.run(link, capture_output=True, text=True)
    assert res.returncode == 0, f"{shlex.join(link)}\n{res.stderr[-4000:]}"
    return elf, [res.stdout, res.stderr]


def _nm(elf: Path, *flags: str) -> str:
    return subprocess.run(["arm-none-eabi-nm", *flags, str(elf)], capture_output=True, text=True, check=True).stdout


def test_library_layout_follows_the_library_specification(library: Path) -> None:
    props = _properties(library)
    assert library.name == props["name"] == LIBRARY_NAME
    assert props["precompiled"] == "true" and props["ldflags"] == "-lkws_tflm"
    assert props["includes"] == "TensorFlowLite.h" and "mbed_nano" in props["architectures"].split(",")
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"])
    for field in ("author", "maintainer", "sentence", "paragraph", "category", "url"):
        assert props[field]
    archive = library / "src" / "cortex-m4" / "fpv4-sp-d16-softfp" / "libkws_tflm.a"
    assert archive.stat().st_size > 100_000
    assert [p for p in library.rglob("*.a")] == [archive]
    # precompiled=true: arduino-cli compiles every source file under src/, so there must be none
    assert not [p for p in library.rglob("*") if p.suffix in (".c", ".cc", ".cpp", ".S", ".ino")]
    src = library / "src"
    for header in ("TensorFlowLite.h", "tensorflow/lite/micro/micro_interpreter.h",
                   "tensorflow/lite/schema/schema_generated.h", "flatbuffers/flatbuffers.h",
                   "fixedpoint/fixedpoint.h", "internal/detect_platform.h", "ruy/profiler/instrumentation.h",
                   "signal/micro/kernels/irfft.h"):
        assert (src / header).is_file(), header
    assert (src / "TensorFlowLite.h").read_bytes() == (HOST_DIR / "nano" / "TensorFlowLite.h").read_bytes()
    assert (library / "LICENSE").is_file() and (library / "extras/third_party/flatbuffers/LICENSE").is_file()


def test_archive_is_softfp_cortex_m4_with_cmsis_nn(library: Path) -> None:
    archive = library / "src" / "cortex-m4" / "fpv4-sp-d16-softfp" / "libkws_tflm.a"
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(archive)], capture_output=True, text=True,
                           check=True).stdout
    assert 'Tag_CPU_name: "7E-M"' in attrs and "Tag_FP_arch: VFPv4-D16" in attrs
    assert "Tag_ABI_VFP_args: VFP registers" not in attrs  # hard float would say so; softfp has no tag
    symbols = _nm(archive, "-C", "--defined-only")
    assert "tflite::MicroInterpreter::Invoke()" in symbols
    assert "arm_fully_connected_per_channel_s8" in symbols  # the per-channel CMSIS-NN dense kernel


def test_sketch_compiles_with_the_nano_flags_and_links_against_the_library(library: Path, tmp_path: Path) -> None:
    """Every sketch file (audio_provider.cpp too, against the PDM.h stand-in) compiles with -Werror and the
    flags arduino-cli passes; the sketch links against the precompiled archive with nothing undefined."""
    elf, _ = _build_sketch(library, firmware.SKETCH_DIR, tmp_path)
    undefined = [line for line in _nm(elf, "-u").splitlines() if line.split()[0] == "U"]
    assert undefined == []
    symbols = _nm(elf, "-C")
    assert "tflite::MicroInterpreter::Invoke()" in symbols and "arm_fully_connected_per_channel_s8" in symbols
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(elf)], capture_output=True, text=True).stdout
    assert "Tag_ABI_VFP_args: VFP registers" not in attrs


def test_every_op_the_codegen_knows_links_against_the_library(library: Path, tmp_path: Path) -> None:
    """A sketch whose resolver registers every op kws_edge.firmware.OP_METHODS knows links too: the archive
    holds each kernel a generated model_ops.h can ask for."""
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    methods = sorted(set(firmware.OP_METHODS.values()))
    calls = "".join(f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;\n" for m in methods)
    (sketch / "model_ops.h").write_text(
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\nnamespace kws_model {\n'
        f"constexpr int kNumOps = {len(methods)};\n"
        "using OpResolver = tflite::MicroMutableOpResolver<kNumOps>;\n"
        f"inline TfLiteStatus RegisterOps(OpResolver& resolver) {{\n{calls}  return kTfLiteOk;\n}}\n}}\n")
    elf, _ = _build_sketch(library, sketch, tmp_path / "build")
    assert [line for line in _nm(elf, "-u").splitlines() if line.split()[0] == "U"] == []


def test_flash_compiles_with_the_library_and_the_build_property(library: Path, xdg_cache: Path,
                                                               tiny_model: Path, tmp_path: Path) -> None:
    """kws-edge flash with a fake arduino-cli: the library comes from the cache (not rebuilt), and compile
    gets --library <it> and the build property. The port does not exist, so flash stops at the touch."""
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    log = tmp_path / "argv.jsonl"
    cli = fake_arduino_cli(tmp_path / "arduino-cli", log)
    env = hermetic_env(tmp_path, XDG_CACHE_HOME=str(xdg_cache))
    port = tmp_path / "ttyACM9"
    res = subprocess.run([*KWS_EDGE, "flash", "--port", str(port), "--model", str(tiny_model), "--sketch",
                          str(sketch), "--arduino-cli", str(cli), "--tflm-dir", str(TFLM_DIR)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "1200-baud touch" in res.stderr and "Traceback" not in res.stderr
    assert f"TFLM library: {library} (cached" in res.stdout
    compile_cmd = [str(cli), "compile", "--fqbn", FQBN, "--library", str(library), "--build-property",
                   "compiler.cpp.extra_flags=-std=gnu++17 -DTF_LITE_STATIC_MEMORY -DCMSIS_NN", str(sketch)]
    assert recorded_argv(log) == [["core", "list", "--format", "json"], compile_cmd[1:]]
    assert "$ " + shlex.join(compile_cmd) in res.stdout  # printed so that it can be pasted into a shell


def test_flash_stops_when_compile_fails(library: Path, xdg_cache: Path, tiny_model: Path, tmp_path: Path) -> None:
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    log = tmp_path / "argv.jsonl"
    cli = fake_arduino_cli(tmp_path / "arduino-cli", log, compile_exit=1)
    res = subprocess.run([*KWS_EDGE, "flash", "--port", "/dev/ttyACM0", "--model", str(tiny_model), "--sketch",
                          str(sketch), "--arduino-cli", str(cli), "--tflm-dir", str(TFLM_DIR)],
                         env=hermetic_env(tmp_path, XDG_CACHE_HOME=str(xdg_cache)),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "compile' failed with exit code 1" in res.stderr
    assert [argv[0] for argv in recorded_argv(log)] == ["core", "compile"]  # no upload after a failed build
