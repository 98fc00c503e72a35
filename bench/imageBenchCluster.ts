// What bench:read and bench:upload measure against: three managers and three workers as child
// processes, driven through one keep-alive undici agent (16 connections, no pipelining).

import { Agent } from 'undici';
import { ImageCluster } from '../tests/integration/imageCluster.ts';

export interface ImageBenchCluster {
  cluster: ImageCluster;
  agent: Agent;
  /** Closes the agent, then stops every process of the cluster. */
  close(): Promise<void>;
}

export async function startImageBenchCluster(name: string): Promise<ImageBenchCluster> {
  const cluster = await ImageCluster.start({ name, managers: 3, workers: 3, startTimeoutMs: 120_000 });
  const agent = new Agent({ connections: 16, keepAliveTimeout: 30_000, pipelining: 1 });
  return {
    cluster,
    agent,
    close: async () => {
      await agent.close();
      await cluster.close();
    },
  };
}
