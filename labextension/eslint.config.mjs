// ESLint (flat config) for the labextension's TypeScript; run by `jlpm lint:check`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/**', 'node_modules/**', '../jupyter_cancel/labextension/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts'],
    rules: {
      // Jupyter's message types are wider than the TS typings (custom control messages).
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      eqeqeq: ['error', 'smart'],
      curly: ['error', 'all'],
      // Small parts: no function over 50 lines, no module over 400 (so no class over ~350).
      'max-lines-per-function': ['error', { max: 50 }],
      'max-lines': ['error', { max: 400 }]
    }
  }
);
