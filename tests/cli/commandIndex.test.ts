// `imgvault --help` is built from COMMAND_INDEX without loading any command; it must read exactly
// as the help of the real commands, and each index entry must load the command it names.

import { describe, expect, it } from 'vitest';
import { COMMAND_INDEX, commandNamed, fullProgram, programFor } from '../../src/cli/program.ts';

describe('the command index', () => {
  it('lists every command as the real commands would', async () => {
    const real = await fullProgram();
    const listed = await programFor(['--help']);
    expect(listed.helpInformation()).toBe(real.helpInformation());
    expect(Object.keys(COMMAND_INDEX)).toEqual(real.commands.map((c) => c.name()));
  });

  it('loads the named command for real, with its options', async () => {
    for (const name of Object.keys(COMMAND_INDEX)) {
      const program = await programFor([name, '--help']);
      const cmd = program.commands.find((c) => c.name() === name);
      expect(cmd, name).toBeDefined();
      const full = (await fullProgram()).commands.find((c) => c.name() === name)!;
      expect(cmd!.helpInformation(), name).toBe(full.helpInformation());
    }
  });

  it('finds the command in `help <command>`, and none in a typo or a bare --help', () => {
    expect(commandNamed(['help', 'status'])).toBe('status');
    expect(commandNamed(['status', '--url', 'x'])).toBe('status');
    expect(commandNamed(['--ca', 'ca.pem', 'status'])).toBe('status');
    expect(commandNamed(['--ca=ca.pem', 'help', 'ls'])).toBe('ls');
    expect(commandNamed(['--help'])).toBeUndefined();
    expect(commandNamed(['stauts'])).toBeUndefined();
    expect(commandNamed(['toString'])).toBeUndefined();
    expect(commandNamed([])).toBeUndefined();
  });
});
