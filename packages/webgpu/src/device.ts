/**
 * Finding a GPU: `navigator.gpu` in a browser, Dawn (the `webgpu` package) in Node. Every failure
 * becomes one Error that says why, so test suites can print it when they skip this backend.
 */

export interface DeviceOptions {
  /** A GPU object to use instead of navigator.gpu or Dawn. */
  gpu?: GPU;
  powerPreference?: GPUPowerPreference;
}

export interface AcquiredDevice {
  adapter: GPUAdapter;
  device: GPUDevice;
  features: string[];
  description: string;
}

/** Optional features used when the adapter has them. */
const WANTED_FEATURES = ["shader-f16", "subgroups", "timestamp-query"] as const;

// Dawn crashes in a garbage collection if the object its create() returned is collected while
// devices live, so the first one is kept here for the life of the process.
let dawnGpu: GPU | null = null;

async function nodeGpu(): Promise<GPU> {
  if (dawnGpu) return dawnGpu;
  let mod: { create(flags: string[]): GPU; globals: Record<string, unknown> };
  try {
    // A variable specifier keeps bundlers from pulling Dawn into browser builds.
    const name = "webgpu";
    mod = (await import(/* @vite-ignore */ name)) as typeof mod;
  } catch (err) {
    throw new Error(`no WebGPU in this runtime: the optional 'webgpu' package (Dawn) could not be loaded (${(err as Error).message})`);
  }
  // Dawn's constants (GPUBufferUsage, GPUMapMode, GPUShaderStage) are globals in a browser.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  // Dawn rounds timestamps to 100 µs by default (a browser's defence against timing attacks);
  // kernel timing in Node wants them as the GPU wrote them. LIGHTNING_WEBGPU_DISABLE_DAWN_FEATURES
  // turns off more toggles, e.g. lazy_clear_resource_on_first_use or vulkan_use_buffer_robust_access_2
  // (probes of what Dawn adds around large buffers).
  const off = ["timestamp_quantization", ...(process.env.LIGHTNING_WEBGPU_DISABLE_DAWN_FEATURES?.split(",").filter((t) => t) ?? [])];
  const flags = ["backend=vulkan", `disable-dawn-features=${off.join(",")}`];
  // Extra Dawn toggles for experiments, e.g. disable_robustness (no index clamping inserted into
  // shaders: a probe of what the bounds checks cost; unsafe for kernels that index out of range).
  const extra = process.env.LIGHTNING_WEBGPU_ENABLE_DAWN_FEATURES;
  if (extra) flags.push(`enable-dawn-features=${extra}`);
  dawnGpu = mod.create(flags);
  return dawnGpu;
}

export async function acquireDevice(options: DeviceOptions = {}): Promise<AcquiredDevice> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  const gpu = options.gpu ?? nav?.gpu ?? (typeof process !== "undefined" && process.versions?.node ? await nodeGpu() : undefined);
  if (!gpu) throw new Error("no WebGPU in this runtime: navigator.gpu is undefined (a browser without WebGPU, or WebGPU disabled)");
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? "high-performance" });
  if (!adapter) {
    const vk = typeof process !== "undefined" ? process.env?.VK_ICD_FILENAMES : undefined;
    throw new Error(
      `no WebGPU adapter found (no Vulkan driver${vk ? ` usable at VK_ICD_FILENAMES=${vk}` : "; run tools/setup.sh for the CPU driver lavapipe, and run through tools/with-vulkan.sh"})`,
    );
  }
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  // Ask for everything the adapter offers: the defaults (e.g. 128 MiB storage bindings, 16 KiB of
  // workgroup memory) are far below what GPUs have.
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: features as GPUFeatureName[], requiredLimits });
  } catch (err) {
    throw new Error(`the WebGPU adapter refused a device: ${(err as Error).message}`);
  }
  const info = adapter.info;
  const description = [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(" ") || "WebGPU adapter";
  return { adapter, device, features, description };
}
