// The native-assets build hook: builds libtidesync (crates/tidesync-ffi) with cargo for the
// platform Flutter is building for, and bundles it as the code asset
// `package:tidesync/tidesync` that lib/src/bindings.g.dart binds to.
//
// Needs the Rust toolchain with the target installed (`rustup target add ...`, see
// docs/ffi.md). For Android, the NDK's clang comes from the hook's C compiler config; for
// iOS and macOS, Xcode's. `TIDESYNC_PREBUILT=/path/to/libtidesync.so` skips the build and
// bundles that file instead (CI artifacts, release builds).

import 'dart:io';

import 'package:code_assets/code_assets.dart';
import 'package:hooks/hooks.dart';

void main(List<String> args) async {
  await build(args, (BuildInput input, BuildOutputBuilder output) async {
    if (!input.config.buildCodeAssets) {
      return;
    }
    final CodeConfig code = input.config.code;
    final Uri workspace = input.packageRoot.resolve('../../');
    final String prebuilt = Platform.environment['TIDESYNC_PREBUILT'] ?? '';
    final Uri library;
    if (prebuilt.isNotEmpty) {
      library = Uri.file(prebuilt);
    } else {
      final String triple = rustTriple(code);
      final Uri targetDir = input.outputDirectoryShared.resolve('cargo/');
      final ProcessResult result = await Process.run(
        'cargo',
        <String>[
          'build',
          '--release',
          '--package',
          'tidesync-ffi',
          '--target',
          triple,
          '--target-dir',
          targetDir.toFilePath(),
        ],
        workingDirectory: workspace.toFilePath(),
        environment: cargoEnvironment(code, triple),
      );
      if (result.exitCode != 0) {
        throw Exception(
          'cargo build of tidesync-ffi for $triple failed '
          '(is the target installed? `rustup target add $triple`):\n${result.stderr}',
        );
      }
      library = targetDir.resolve('$triple/release/${libraryFile(code.targetOS)}');
    }
    output.assets.code.add(
      CodeAsset(
        package: input.packageName,
        name: 'tidesync',
        linkMode: DynamicLoadingBundled(),
        file: library,
      ),
    );
    output.dependencies.add(workspace.resolve('crates/'));
    output.dependencies.add(workspace.resolve('Cargo.lock'));
  });
}

/// The Rust target triple of the build.
String rustTriple(CodeConfig code) {
  final Architecture arch = code.targetArchitecture;
  final String cpu = switch (arch) {
    Architecture.arm64 => 'aarch64',
    Architecture.x64 => 'x86_64',
    Architecture.arm => 'armv7',
    Architecture.ia32 => 'i686',
    Architecture.riscv64 => 'riscv64gc',
    _ => throw UnsupportedError('tidesync does not build for $arch'),
  };
  final OS os = code.targetOS;
  if (os == OS.android) {
    return arch == Architecture.arm ? 'armv7-linux-androideabi' : '$cpu-linux-android';
  }
  if (os == OS.iOS) {
    final bool simulator = code.iOS.targetSdk == IOSSdk.iPhoneSimulator;
    if (arch == Architecture.x64) {
      return 'x86_64-apple-ios';
    }
    return simulator ? 'aarch64-apple-ios-sim' : 'aarch64-apple-ios';
  }
  if (os == OS.macOS) {
    return '$cpu-apple-darwin';
  }
  if (os == OS.linux) {
    return '$cpu-unknown-linux-gnu';
  }
  if (os == OS.windows) {
    return '$cpu-pc-windows-msvc';
  }
  throw UnsupportedError('tidesync does not build for $os');
}

/// The file cargo writes for a `cdylib` named `tidesync`.
String libraryFile(OS os) {
  if (os == OS.windows) {
    return 'tidesync.dll';
  }
  if (os == OS.macOS || os == OS.iOS) {
    return 'libtidesync.dylib';
  }
  return 'libtidesync.so';
}

/// Tells cargo which linker to use when the hook was given a C toolchain (Android's NDK).
Map<String, String> cargoEnvironment(CodeConfig code, String triple) {
  final CCompilerConfig? cc = code.cCompiler;
  if (cc == null) {
    return <String, String>{};
  }
  final String variable = triple.toUpperCase().replaceAll('-', '_');
  return <String, String>{
    'CARGO_TARGET_${variable}_LINKER': cc.compiler.toFilePath(),
    'CC_${triple.replaceAll('-', '_')}': cc.compiler.toFilePath(),
    'AR_${triple.replaceAll('-', '_')}': cc.archiver.toFilePath(),
  };
}
