# Sourced by the GPU benchmark scripts: unpacks the Vulkan loader / glvnd .debs from .gl/ when the
# machine lacks them (BENCHMARKS.md, "GPU path"), and gives wgpu a runtime dir.
if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
