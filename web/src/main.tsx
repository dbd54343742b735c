import { render } from 'preact';
import { App } from './app';
import { loadSession } from './session';
import './styles.css';

void loadSession();
render(<App />, document.getElementById('app')!);
