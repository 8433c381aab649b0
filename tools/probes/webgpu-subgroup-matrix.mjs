// Probe: does Dawn on this GPU offer shader-f16 and subgroup matrices (VK_KHR_cooperative_matrix on
// Vulkan), with and without the toggles vulkan_enable_f16_on_nvidia and allow_unsafe_apis, with
// which configurations, and how fast is a plain f16-operand, f32-accumulate matmul on them (one
// subgroup a workgroup, SMX_TM × SMX_TN result matrices each, operands straight from storage;
// Dawn requires the offsets of subgroup-matrix loads and stores to be uniform across the
// workgroup). Not part of the product: the numbers of docs/benchmarks/webgpu-h200-2026-11-30.md.
//
//   node tools/gpu-tests/build.mjs && cp tools/probes/webgpu-subgroup-matrix.mjs dist/gpu-tests/
//   SMX_TM=4 SMX_TN=4 node dist/gpu-tests/webgpu-subgroup-matrix.mjs     (SMX_S: matrix size, 4096)
import { create, globals } from "webgpu";
const { GPUBufferUsage, GPUMapMode } = globals;
const keep = [];
const sets = [["backend=vulkan"], ["backend=vulkan", "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia"]];
let chosen = null;
for (const flags of sets) {
  const gpu = create(flags);
  keep.push(gpu);
  const ad = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!ad) { console.log("no adapter", flags); continue; }
  console.log("flags", JSON.stringify(flags));
  console.log("  features", [...ad.features].sort().join(","));
  const cfgs = ad.info.subgroupMatrixConfigs;
  console.log("  subgroupMatrixConfigs", cfgs ? [...cfgs].map((c) => `${c.componentType}->${c.resultComponentType} M${c.M} N${c.N} K${c.K}`).join("; ") : "none");
  console.log("  subgroup sizes", ad.info.subgroupMinSize, ad.info.subgroupMaxSize);
  if (ad.features.has("chromium-experimental-subgroup-matrix") && cfgs) chosen = { ad, cfgs: [...cfgs] };
}
if (!chosen) { console.log("no subgroup matrices"); process.exit(0); }

function f16bits(x) {
  // exact for the small dyadic values used here
  if (x === 0) return 0;
  const s = x < 0 ? 0x8000 : 0; x = Math.abs(x);
  let e = Math.floor(Math.log2(x)); let m = x / 2 ** e - 1;
  return s | ((e + 15) << 10) | Math.round(m * 1024);
}
const { ad, cfgs } = chosen;
for (const comp of ["f16", "f32"]) {
  const cfg = cfgs.find((c) => c.componentType === comp && c.resultComponentType === "f32");
  if (!cfg) { console.log("no config", comp, "-> f32"); continue; }
  if (comp === "f16" && !ad.features.has("shader-f16")) { console.log("f16 config but no shader-f16"); continue; }
  const feats = ["chromium-experimental-subgroup-matrix", "subgroups", "timestamp-query", ...(comp === "f16" ? ["shader-f16"] : [])];
  const dev = await ad.requestDevice({ requiredFeatures: feats, requiredLimits: { maxStorageBufferBindingSize: ad.limits.maxStorageBufferBindingSize, maxBufferSize: ad.limits.maxBufferSize } });
  dev.pushErrorScope("validation");
  const { M, N, K } = cfg;
  const S = Number(process.env.SMX_S ?? 4096); // C (S×S) = A (S×S) · B (S×S), row-major
  const TM = Number(process.env.SMX_TM ?? 4), TN = Number(process.env.SMX_TN ?? 2); // result matrices a subgroup
  const wg = 32; // one subgroup a workgroup: offsets uniform
  const code = `${comp === "f16" ? "enable f16;\n" : ""}enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> A: array<${comp}>;
@group(0) @binding(1) var<storage, read> B: array<${comp}>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * ${TM * M}u;
  let col0 = wid.x * ${TN * N}u;
  ${Array.from({ length: TM * TN }, (_, i) => `var acc${i} = subgroup_matrix_result<f32, ${N}, ${M}>();`).join("\n  ")}
  for (var k0 = 0u; k0 < ${S}u; k0 = k0 + ${K}u) {
    ${Array.from({ length: TM }, (_, i) => `let a${i} = subgroupMatrixLoad<subgroup_matrix_left<${comp}, ${K}, ${M}>>(&A, (row0 + ${i * M}u) * ${S}u + k0, false, ${S}u);`).join("\n    ")}
    ${Array.from({ length: TN }, (_, j) => `let b${j} = subgroupMatrixLoad<subgroup_matrix_right<${comp}, ${N}, ${K}>>(&B, k0 * ${S}u + col0 + ${j * N}u, false, ${S}u);`).join("\n    ")}
    ${Array.from({ length: TM * TN }, (_, i) => `acc${i} = subgroupMatrixMultiplyAccumulate(a${Math.floor(i / TN)}, b${i % TN}, acc${i});`).join("\n    ")}
  }
  ${Array.from({ length: TM * TN }, (_, i) => `subgroupMatrixStore(&C, (row0 + ${Math.floor(i / TN) * M}u) * ${S}u + col0 + ${(i % TN) * N}u, acc${i}, false, ${S}u);`).join("\n  ")}
}`;
  const mod = dev.createShaderModule({ code });
  const info = await mod.getCompilationInfo();
  for (const m of info.messages) console.log("  wgsl", m.type, m.lineNum, m.message);
  const pipe = dev.createComputePipeline({ layout: "auto", compute: { module: mod, entryPoint: "main" } });
  const vals = (seed) => { const a = new Float32Array(S * S); let x = seed; for (let i = 0; i < a.length; i++) { x = (x * 1103515245 + 12345) >>> 0; a[i] = ((x >>> 16) % 9 - 4) / 8; } return a; };
  const a = vals(1), b = vals(2);
  const enc = (arr) => comp === "f16" ? Uint16Array.from(arr, f16bits) : arr;
  const buf = (data, usage) => { const g = dev.createBuffer({ size: data.byteLength, usage }); dev.queue.writeBuffer(g, 0, data); return g; };
  const bA = buf(enc(a), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  const bB = buf(enc(b), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  const bC = dev.createBuffer({ size: S * S * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const rd = dev.createBuffer({ size: S * S * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const bg = dev.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const run = (n) => { const e = dev.createCommandEncoder(); for (let i = 0; i < n; i++) { const p = e.beginComputePass(); p.setPipeline(pipe); p.setBindGroup(0, bg); p.dispatchWorkgroups(S / (TN * N), S / (TM * M)); p.end(); } dev.queue.submit([e.finish()]); return dev.queue.onSubmittedWorkDone(); };
  const err = await dev.popErrorScope();
  if (err) { console.log("  validation:", err.message); continue; }
  const t0 = performance.now(); while (performance.now() - t0 < 1500) await run(10);
  const n = 40; const t1 = performance.now(); await run(n); const ms = (performance.now() - t1) / n;
  const e = dev.createCommandEncoder(); e.copyBufferToBuffer(bC, 0, rd, 0, S * S * 4); dev.queue.submit([e.finish()]);
  await rd.mapAsync(GPUMapMode.READ); const c = new Float32Array(rd.getMappedRange().slice(0));
  let bad = 0; for (let t = 0; t < 64; t++) { const i = (t * 977) % S, j = (t * 1553 + 7) % S; let s = 0; for (let k = 0; k < S; k++) s += a[i * S + k] * b[k * S + j]; if (s !== c[i * S + j]) bad++; }
  console.log(`  ${comp}->f32 M${M} N${N} K${K}: ${S}^3 in ${ms.toFixed(3)} ms = ${(2 * S ** 3 / ms / 1e9).toFixed(1)} TFLOP/s (wall, ${n} queued); ${64 - bad}/64 sampled entries exact`);
}
