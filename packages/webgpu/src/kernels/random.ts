/**
 * randomUniform and randomNormal: the Philox4x32-10 stream of tensor/src/rng.ts, bit for bit.
 *
 * rng.ts fixes every f32 operation. The danger on a GPU is contraction: a compiler may fuse
 * `a * b + c` into one FMA, which rounds once instead of twice. WGSL has no way to forbid it, so each
 * product that feeds an addition goes through `nf` (xor of its bits with a parameter that is always
 * 0): the compiler cannot see through it, so it cannot fuse. The constants are rng.ts's, emitted as
 * exact bit patterns.
 */
import { type Kernel, type KernelTable, seedKey } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { encodeF, f32Const, wordCount, wordLoop } from "../wgsl.js";
import { f32Bits, groups, type Ref, WG } from "./common.js";

const fr = Math.fround;
// rng.ts: ln(1 + f) polynomial, Cody–Waite split of ln 2, and the cos/sin Taylor coefficients.
const LOG_Q = [-0.499999881, 0.333333254, -0.250015765, 0.200020581, -0.166092694, 0.141803533, -0.132400766, 0.129124328, -0.0763828382];
const LN2_HI = 0.693145751953125;
const LN2_LO = 1.42860677e-6;
const SQRT2 = 1.41421354;
const COS_C = [1, -19.7392082, 64.9393921, -85.4568176, 60.2446404, -26.4262562];
const SIN_C = [6.28318548, -41.3417015, 81.6052475, -76.7058563, 42.0586929];

const consts = (name: string, c: readonly number[]) =>
  `const ${name} = array<f32, ${c.length}>(${c.map((x) => f32Const(fr(x))).join(", ")});`;

// Params: n, words, seed lo, seed hi, offset lo, offset hi, opaque zero, then a, b (low/range or mean/std).
const PHILOX = /* wgsl */ `
${consts("LOG_Q", LOG_Q)}
${consts("COS_C", COS_C)}
${consts("SIN_C", SIN_C)}

fn nf(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ pu(6u)); }

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu; let ah = a >> 16u; let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return vec2<u32>(a * b, ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

// Philox4x32-10 block of element i: counter offset + i (64-bit), key = the seed's two words.
fn block(i: u32) -> vec4<u32> {
  let lo = pu(4u) + i;
  var c = vec4<u32>(lo, pu(5u) + select(0u, 1u, lo < i), 0u, 0u);
  var k = vec2<u32>(pu(2u), pu(3u));
  for (var round = 0u; round < 10u; round = round + 1u) {
    if (round > 0u) { k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u); }
    let p0 = mulhilo(0xd2511f53u, c.x);
    let p1 = mulhilo(0xcd9e8d57u, c.z);
    c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
  }
  return c;
}

fn log_scaled(a: u32) -> f32 {
  var e = 31 - i32(countLeadingZeros(a));
  var m = ldexp(f32(a), -e);
  if (m >= ${f32Const(fr(SQRT2))}) { m = m * 0.5; e = e + 1; }
  let f = m - 1.0;
  var q = LOG_Q[8];
  for (var j = 7; j >= 0; j = j - 1) { q = nf(q * f) + LOG_Q[j]; }
  let p = f + nf(nf(f * f) * q);
  let k = f32(e - 24);
  return nf(k * ${f32Const(fr(LN2_HI))}) + (nf(k * ${f32Const(fr(LN2_LO))}) + p);
}

fn sqrt_f32(x: f32) -> f32 {
  var y = bitcast<f32>(0x5f3759df - (bitcast<i32>(x) >> 1u));
  let h = 0.5 * x;
  for (var i = 0; i < 3; i = i + 1) { y = y * (1.5 - nf(nf(h * y) * y)); }
  return x * y;
}

fn poly_cos(s: f32) -> f32 { var r = COS_C[5]; for (var j = 4; j >= 0; j = j - 1) { r = nf(r * s) + COS_C[j]; } return r; }
fn poly_sin(s: f32) -> f32 { var r = SIN_C[4]; for (var j = 3; j >= 0; j = j - 1) { r = nf(r * s) + SIN_C[j]; } return r; }

fn cos_turn(b: u32) -> f32 {
  let shifted = b + (1u << 21u);
  let quadrant = (shifted >> 22u) & 3u;
  let t = f32(i32(shifted & 0x3fffffu) - (1 << 21u)) * ${f32Const(2 ** -24)};
  let s = t * t;
  switch quadrant {
    case 0u: { return poly_cos(s); }
    case 1u: { return -(t * poly_sin(s)); }
    case 2u: { return -poly_cos(s); }
    default: { return t * poly_sin(s); }
  }
}

fn uniform_at(i: u32) -> f32 {
  let u = f32(block(i).x >> 8u) * ${f32Const(2 ** -24)};
  return nf(u * pf(8u)) + pf(7u);
}

fn normal_at(i: u32) -> f32 {
  let x = block(i);
  let r = sqrt_f32(-2.0 * log_scaled(2u * (x.x >> 9u) + 1u));
  return nf(pf(8u) * (r * cos_turn(x.y >> 8u))) + pf(7u);
}
`;

export function randomKernels(rt: Runtime) {
  function run(kind: "uniform" | "normal", out: Ref, seed: number, offset: number, a: number, b: number): void {
    const [k0, k1] = seedKey(seed);
    const nw = wordCount(out.dtype, out.size);
    rt.dispatch({
      key: `random_${kind}:${out.dtype}`,
      shader: () => ({
        doc: [`y: (n) ${out.dtype}`],
        bindings: [{ name: "y", access: "rw" }],
        workgroupSize: WG,
        decls: PHILOX,
        body: wordLoop("y", out.dtype, encodeF(out.dtype, `${kind}_at(i)`)),
      }),
      bindings: [{ buffer: out.storage, access: "rw" }],
      params: [out.size, nw, k0, k1, offset >>> 0, Math.floor(offset / 2 ** 32), 0, f32Bits(a), f32Bits(b)],
      workgroups: groups(nw),
    });
  }

  const randomUniform: Kernel<"randomUniform", GPUBuffer> = ({ outputs: [y], attrs }) => {
    // As rng.ts: value = f32(f32(u · f32(high − low)) + f32(low)).
    run("uniform", y, attrs.seed, attrs.offset, fr(attrs.low), fr(fr(attrs.high) - fr(attrs.low)));
  };
  const randomNormal: Kernel<"randomNormal", GPUBuffer> = ({ outputs: [y], attrs }) => {
    run("normal", y, attrs.seed, attrs.offset, fr(attrs.mean), fr(attrs.std));
  };
  return { randomUniform, randomNormal } satisfies Partial<KernelTable<GPUBuffer>>;
}
