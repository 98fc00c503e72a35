// `npm run docs:config`: writes docs/configuration.md from the code (configReference.ts).

import { writeFile } from 'node:fs/promises';
import { renderConfigReference } from './configReference.ts';

const target = new URL('../../docs/configuration.md', import.meta.url);
await writeFile(target, await renderConfigReference());
console.log(`wrote ${target.pathname}`);
