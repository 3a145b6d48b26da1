// placeholder until generated
export {};
