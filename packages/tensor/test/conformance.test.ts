import { conformanceSuite } from "@lightning-ts/testing";

await conformanceSuite();
