import type { PageProps } from '../app';
import { PageTitle } from '../ui';

export default function Page(_: PageProps) {
  return <PageTitle>sandbox</PageTitle>;
}
