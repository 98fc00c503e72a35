#!/usr/bin/env -S node --initial-old-space-size=128
// The flag: see HEAP_FLAGS in src/cli/localProcess.ts. (env -S splits it from `node`.)
// The CLI is written in TypeScript and run through tsx's loader, so a checkout needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
