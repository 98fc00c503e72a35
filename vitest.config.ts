import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Cluster tests start real processes; two cores cannot run many of them at once.
    maxWorkers: 2,
  },
});
