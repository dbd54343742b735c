// Admin: the operators' pages, one section per /admin/:section. Only admins see data: anyone
// else gets the admins-only message (and the API answers them 403); signed-out visitors are
// sent to sign in first.
import type { ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { isAdmin } from '../session';
import { ErrorMessage, Loading, PageTitle, RequireSignIn } from '../ui';
import { AdminsOnly } from '../admin/common';
import { Overview } from '../admin/overview';
import { Pools } from '../admin/pools';
import { Loras } from '../admin/loras';
import { Users } from '../admin/users';
import { Tools } from '../admin/tools';
import { Attach } from '../admin/attach';
import './admin.css';

/** The costs section with its chart library (uPlot), loaded when it is opened: the other
 * sections do not pay for it. */
function Costs() {
  const [Section, setSection] = useState<ComponentType | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    import('../admin/costs').then(
      (m) => setSection(() => m.Costs),
      () => setError(new Error('The costs charts could not be loaded; reload to try again.')),
    );
  }, []);
  if (error) return <ErrorMessage error={error} />;
  return Section ? <Section /> : <Loading what="Loading the charts" />;
}

const SECTIONS: { slug: string; title: string; component: ComponentType }[] = [
  { slug: 'overview', title: 'Overview', component: Overview },
  { slug: 'pools', title: 'Pools & instances', component: Pools },
  { slug: 'costs', title: 'Costs & P&L', component: Costs },
  { slug: 'loras', title: 'LoRA moderation', component: Loras },
  { slug: 'users', title: 'Users & credits', component: Users },
  { slug: 'tools', title: 'Tools', component: Tools },
  { slug: 'attach', title: 'Attach a machine', component: Attach },
];

export default function Page({ params }: PageProps) {
  return (
    <RequireSignIn>
      <Admin section={params.section ?? 'overview'} />
    </RequireSignIn>
  );
}

function Admin({ section }: { section: string }) {
  const current = SECTIONS.find((s) => s.slug === section);
  if (!isAdmin.value) {
    return (
      <section>
        <PageTitle>Admin</PageTitle>
        <AdminsOnly />
      </section>
    );
  }
  const Section = current?.component;
  return (
    <section class="admin">
      <PageTitle>{current ? `Admin: ${current.title}` : 'Admin'}</PageTitle>
      <nav aria-label="Admin sections" class="admin-nav">
        {SECTIONS.map((s) => (
          <a key={s.slug} href={`/admin/${s.slug}`} aria-current={s.slug === section ? 'page' : undefined}>
            {s.title}
          </a>
        ))}
      </nav>
      {Section ? (
        <Section />
      ) : (
        <p role="alert" class="message error">
          There is no admin section “{section}”. <a href="/admin">Back to the overview</a>.
        </p>
      )}
    </section>
  );
}
