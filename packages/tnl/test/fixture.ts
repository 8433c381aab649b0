/**
 * The official-code fixture (in @lightning-ts/testing: fixtures/tnl-tiny, see its README), checked
 * against its sha256 sums when loaded, and comparison helpers.
 */
import { tnlFixture } from "@lightning-ts/testing/tnl-fixture";

export { FIXTURE_DIR, type FixtureJson, maxAbsDiff, readF32 } from "@lightning-ts/testing/tnl-fixture";

export const fixture = tnlFixture();
