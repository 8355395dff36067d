/*
 * Loaded with `node -r` into every process of the nextjs image that builds or
 * serves a Next.js app (NODE_OPTIONS, set by the runner and the warm-up).
 *
 * Next.js ships no native SWC compiler for linux/ia32, and outside a
 * StackBlitz WebContainer it does not fall back to the wasm build
 * (@next/swc-wasm-nodejs, installed in the image). Claiming to be one makes
 * it load the wasm build.
 */
"use strict";

if (!process.versions.webcontainer) {
  Object.defineProperty(process.versions, "webcontainer", { value: "appserver", enumerable: true });
}
