;; f32 GEMM macro-kernel on packed panels, WebAssembly SIMD (f32x4).
;;
;; The caller (matmul-engine.ts) packs, in this module's memory:
;;   A block  (mc, K): per K-slice of width kc, row micro-panels of MR = 4 rows, each stored
;;            p-major: element (i, p) of a panel at a + 4 * (p * 4 + i)
;;   B panel  (K, nc): per K-slice, column micro-panels of NR = 8 columns, element (p, j) at
;;            b + 4 * (p * 8 + j)
;;   C block  (mc, nc): row-major, written (first slice) then accumulated (later slices)
;; mc and nc are padded to multiples of 4 and 8 with zeros, so the micro-kernel has no edge cases.
;;
;; The 4x8 tile lives in 8 v128 accumulators. V8 on x86-64 allocates 15 SIMD registers (xmm15 is
;; its scratch): 8 accumulators + 2 B vectors + 1 broadcast A value + 1 product fit, while a 6x8
;; tile (12 accumulators) spills and measured 25% slower (4x8: ~32 GFLOP/s/core in cache on Zen 3).
;; Plain SIMD has no fused multiply-add, hence the separate mul and add. This is the fallback for
;; engines without relaxed SIMD; matmul-relaxed.wat is the fused 6x8 kernel used where it validates.
(module
  (memory (export "memory") 1)
  (global (export "mr") i32 (i32.const 4))

  ;; C[4, 8] (=|+=) A[4, kc] . B[kc, 8]; ldc in bytes.
  (func $micro (param $a i32) (param $b i32) (param $c i32) (param $kc i32) (param $ldc i32) (param $acc i32)
    (local $end i32) (local $row i32) (local $b0 v128) (local $b1 v128) (local $x v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (if (local.get $acc)
      (then
        (local.set $row (local.get $c))
        (local.set $c00 (v128.load (local.get $row)))
        (local.set $c01 (v128.load offset=16 (local.get $row)))
        (local.set $row (i32.add (local.get $row) (local.get $ldc)))
        (local.set $c10 (v128.load (local.get $row)))
        (local.set $c11 (v128.load offset=16 (local.get $row)))
        (local.set $row (i32.add (local.get $row) (local.get $ldc)))
        (local.set $c20 (v128.load (local.get $row)))
        (local.set $c21 (v128.load offset=16 (local.get $row)))
        (local.set $row (i32.add (local.get $row) (local.get $ldc)))
        (local.set $c30 (v128.load (local.get $row)))
        (local.set $c31 (v128.load offset=16 (local.get $row)))))
    (local.set $end (i32.add (local.get $b) (i32.shl (local.get $kc) (i32.const 5))))
    (block $done
      (br_if $done (i32.ge_u (local.get $b) (local.get $end)))
      (loop $k
        ;; one rank-1 update: B row p (8 values) times A column p (4 values)
        (local.set $b0 (v128.load (local.get $b)))
        (local.set $b1 (v128.load offset=16 (local.get $b)))
        (local.set $x (v128.load32_splat (local.get $a)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x) (local.get $b1))))
        (local.set $x (v128.load32_splat offset=4 (local.get $a)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $x) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $x) (local.get $b1))))
        (local.set $x (v128.load32_splat offset=8 (local.get $a)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $x) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $x) (local.get $b1))))
        (local.set $x (v128.load32_splat offset=12 (local.get $a)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $x) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $x) (local.get $b1))))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 32)))
        (br_if $k (i32.lt_u (local.get $b) (local.get $end)))))
    (local.set $row (local.get $c))
    (v128.store (local.get $row) (local.get $c00))
    (v128.store offset=16 (local.get $row) (local.get $c01))
    (local.set $row (i32.add (local.get $row) (local.get $ldc)))
    (v128.store (local.get $row) (local.get $c10))
    (v128.store offset=16 (local.get $row) (local.get $c11))
    (local.set $row (i32.add (local.get $row) (local.get $ldc)))
    (v128.store (local.get $row) (local.get $c20))
    (v128.store offset=16 (local.get $row) (local.get $c21))
    (local.set $row (i32.add (local.get $row) (local.get $ldc)))
    (v128.store (local.get $row) (local.get $c30))
    (v128.store offset=16 (local.get $row) (local.get $c31)))

  ;; C[mc, nc] = A[mc, K] . B[K, nc] over packed operands (layout above), K cut into slices of kcMax.
  ;; Loop order: B micro-panel (kc x 8, L1) outside, A micro-panels (kc x 4, from the L2-sized A
  ;; block) inside.
  (func (export "gemm") (param $a i32) (param $b i32) (param $c i32)
        (param $mc i32) (param $nc i32) (param $K i32) (param $kcMax i32)
    (local $pc i32) (local $kc i32) (local $i i32) (local $j i32) (local $ldc i32)
    (local $aSlice i32) (local $bSlice i32)
    (local.set $ldc (i32.shl (local.get $nc) (i32.const 2)))
    (local.set $pc (i32.const 0))
    (block $slicesDone
      (br_if $slicesDone (i32.ge_u (local.get $pc) (local.get $K)))
      (loop $slices
        (local.set $kc (i32.sub (local.get $K) (local.get $pc)))
        (if (i32.gt_u (local.get $kc) (local.get $kcMax)) (then (local.set $kc (local.get $kcMax))))
        (local.set $aSlice (i32.add (local.get $a) (i32.shl (i32.mul (local.get $mc) (local.get $pc)) (i32.const 2))))
        (local.set $bSlice (i32.add (local.get $b) (i32.shl (i32.mul (local.get $nc) (local.get $pc)) (i32.const 2))))
        (local.set $j (i32.const 0))
        (loop $cols
          (local.set $i (i32.const 0))
          (loop $rows
            (call $micro
              (i32.add (local.get $aSlice) (i32.shl (i32.mul (local.get $i) (local.get $kc)) (i32.const 2)))
              (i32.add (local.get $bSlice) (i32.shl (i32.mul (local.get $j) (local.get $kc)) (i32.const 2)))
              (i32.add (local.get $c) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $nc)) (local.get $j)) (i32.const 2)))
              (local.get $kc) (local.get $ldc) (local.get $pc))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br_if $rows (i32.lt_u (local.get $i) (local.get $mc))))
          (local.set $j (i32.add (local.get $j) (i32.const 8)))
          (br_if $cols (i32.lt_u (local.get $j) (local.get $nc))))
        (local.set $pc (i32.add (local.get $pc) (local.get $kc)))
        (br_if $slices (i32.lt_u (local.get $pc) (local.get $K))))))
  ;; Packs a staged block into micro-panels, for A (R = MR) and B (R = NR) alike: element (x, p),
  ;; x < rows, p < kc, read at src + 4 * (x * rs + p * cs), goes to panel x / R at position
  ;; p * R + x % R, each panel R * kc floats; rows up to rowsPad are zero. Offsets and strides are
  ;; in floats. A full panel whose R values per p are contiguous (rs = 1: row-major B, transposed
  ;; A) is copied with vector loads and stores; other panels go lane by lane, each lane a run along
  ;; p. Packing in JavaScript cost 1.5-7 ns per element, as much as the multiply at 512³ on two
  ;; threads.
  (func (export "pack") (param $src i32) (param $rs i32) (param $cs i32) (param $rows i32)
        (param $rowsPad i32) (param $kc i32) (param $R i32) (param $dst i32)
    (local $x i32) (local $r i32) (local $p i32) (local $s i32) (local $d i32) (local $end i32)
    (local $csB i32) (local $rsB i32) (local $stepB i32)
    (local.set $src (i32.shl (local.get $src) (i32.const 2)))
    (local.set $dst (i32.shl (local.get $dst) (i32.const 2)))
    (local.set $csB (i32.shl (local.get $cs) (i32.const 2)))
    (local.set $rsB (i32.shl (local.get $rs) (i32.const 2)))
    (local.set $stepB (i32.shl (local.get $R) (i32.const 2)))
    (block $panelsDone
      (br_if $panelsDone (i32.ge_u (local.get $x) (local.get $rowsPad)))
      (br_if $panelsDone (i32.eqz (local.get $kc)))
      (loop $panels
        ;; s: element (x, 0); d: this panel; end: past its last p
        (local.set $s (i32.add (local.get $src) (i32.mul (local.get $x) (local.get $rsB))))
        (local.set $d (local.get $dst))
        (local.set $end (i32.add (local.get $d) (i32.mul (local.get $kc) (local.get $stepB))))
        (if (i32.and (i32.eq (local.get $rs) (i32.const 1)) (i32.le_u (i32.add (local.get $x) (local.get $R)) (local.get $rows)))
          (then
            (if (i32.eq (local.get $R) (i32.const 8))
              (then
                (loop $p8
                  (v128.store (local.get $d) (v128.load (local.get $s)))
                  (v128.store offset=16 (local.get $d) (v128.load offset=16 (local.get $s)))
                  (local.set $s (i32.add (local.get $s) (local.get $csB)))
                  (local.set $d (i32.add (local.get $d) (i32.const 32)))
                  (br_if $p8 (i32.lt_u (local.get $d) (local.get $end)))))
              (else
                (if (i32.eq (local.get $R) (i32.const 6))
                  (then
                    (loop $p6
                      (v128.store (local.get $d) (v128.load (local.get $s)))
                      (i64.store offset=16 (local.get $d) (i64.load offset=16 (local.get $s)))
                      (local.set $s (i32.add (local.get $s) (local.get $csB)))
                      (local.set $d (i32.add (local.get $d) (i32.const 24)))
                      (br_if $p6 (i32.lt_u (local.get $d) (local.get $end)))))
                  (else
                    (loop $p4
                      (v128.store (local.get $d) (v128.load (local.get $s)))
                      (local.set $s (i32.add (local.get $s) (local.get $csB)))
                      (local.set $d (i32.add (local.get $d) (i32.const 16)))
                      (br_if $p4 (i32.lt_u (local.get $d) (local.get $end)))))))))
          (else
            ;; lane by lane: lane r of every p, then the next lane; zeros past rows
            (local.set $r (i32.const 0))
            (loop $lanes
              (local.set $d (i32.add (local.get $dst) (i32.shl (local.get $r) (i32.const 2))))
              (local.set $end (i32.add (local.get $d) (i32.mul (local.get $kc) (local.get $stepB))))
              (if (i32.lt_u (i32.add (local.get $x) (local.get $r)) (local.get $rows))
                (then
                  (local.set $p (i32.add (local.get $s) (i32.mul (local.get $r) (local.get $rsB))))
                  (loop $run
                    (f32.store (local.get $d) (f32.load (local.get $p)))
                    (local.set $p (i32.add (local.get $p) (local.get $csB)))
                    (local.set $d (i32.add (local.get $d) (local.get $stepB)))
                    (br_if $run (i32.lt_u (local.get $d) (local.get $end)))))
                (else
                  (loop $zeros
                    (f32.store (local.get $d) (f32.const 0))
                    (local.set $d (i32.add (local.get $d) (local.get $stepB)))
                    (br_if $zeros (i32.lt_u (local.get $d) (local.get $end))))))
              (local.set $r (i32.add (local.get $r) (i32.const 1)))
              (br_if $lanes (i32.lt_u (local.get $r) (local.get $R))))))
        (local.set $dst (i32.add (local.get $dst) (i32.mul (local.get $kc) (local.get $stepB))))
        (local.set $x (i32.add (local.get $x) (local.get $R)))
        (br_if $panels (i32.lt_u (local.get $x) (local.get $rowsPad)))))))
